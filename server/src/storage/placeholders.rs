//! Placeholders of the hand-built batched statements (`step_batch`, `complete_batch`,
//! `attempt_ops`, the timeline flush): their SQL names its values by number (`$n` on
//! PostgreSQL, `?n` on SQLite: `attempt_ops::param`) so that it may use them in any order.
//! [`statement`] keeps them on PostgreSQL and turns them into anonymous `?` on SQLite, the
//! values reordered (and repeated) in order of appearance: sqlx asks SQLite for the name
//! of every parameter it binds, and for numbered parameters SQLite finds the name by a
//! linear scan of the statement's parameter list, so binding a statement of `n` numbered
//! parameters costs O(n^2); anonymous parameters have no name to look up.

use sea_orm::{DbBackend, Statement, Value};

/// The statement of `sql` written with `attempt_ops::param` placeholders over `values`: as is on
/// PostgreSQL; on SQLite with every `?n` (outside quotes) replaced by `?` and the values
/// bound in order of appearance.
pub(super) fn statement(backend: DbBackend, sql: String, values: Vec<Value>) -> Statement {
    if backend == DbBackend::Postgres {
        return Statement::from_sql_and_values(backend, sql, values);
    }
    let (sql, values) = anonymous(&sql, values);
    Statement::from_sql_and_values(backend, sql, values)
}

/// `sql` with its `?n` placeholders made anonymous, and the values in their new order. A
/// placeholder naming no value binds NULL, as SQLite does for an unbound parameter.
fn anonymous(sql: &str, values: Vec<Value>) -> (String, Vec<Value>) {
    let mut slots: Vec<Option<Value>> = values.into_iter().map(Some).collect();
    // Where each value went in `out` (for a value named twice).
    let mut placed: Vec<Option<usize>> = vec![None; slots.len()];
    let mut out: Vec<Value> = Vec::with_capacity(slots.len());
    let mut text = String::with_capacity(sql.len());
    let bytes = sql.as_bytes();
    let mut quote: Option<u8> = None;
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if let Some(q) = quote {
            if b == q {
                quote = None; // a doubled quote closes and reopens: same outcome
            }
            i += 1;
            continue;
        }
        match b {
            b'\'' | b'"' | b'`' => {
                quote = Some(b);
                i += 1;
            }
            b'?' => {
                let start = i + 1;
                let mut end = start;
                while end < bytes.len() && bytes[end].is_ascii_digit() {
                    end += 1;
                }
                if end == start {
                    i += 1; // already anonymous: no way to know its value, keep it
                    continue;
                }
                // ASCII digits: valid UTF-8 boundaries; a number too large names no value.
                let n = sql[start..end].parse::<usize>().unwrap_or(0);
                text.push_str(&sql[copied..i]);
                text.push('?');
                copied = end;
                i = end;
                let value = match n.checked_sub(1).filter(|k| *k < slots.len()) {
                    Some(k) => match slots[k].take() {
                        Some(v) => {
                            placed[k] = Some(out.len());
                            v
                        }
                        None => placed[k].map_or(Value::String(None), |p| out[p].clone()),
                    },
                    None => Value::String(None),
                };
                out.push(value);
            }
            _ => i += 1,
        }
    }
    text.push_str(&sql[copied..]);
    (text, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_filter_is_a_literal_on_sqlite_and_a_parameter_on_postgres() {
        use super::super::attempt_ops::status_filter;
        use crate::engine::model::RunStatus;
        let sql = |backend| {
            format!(
                "UPDATE runs SET status = ?1 WHERE id = ?3 AND status = {}",
                status_filter(backend, 1, RunStatus::Running)
            )
        };
        let values = vec![
            Value::from("completed".to_owned()),
            Value::from("running".to_owned()),
            Value::from("r1".to_owned()),
        ];
        // SQLite: no bound value for the planner to compare with the partial indexes.
        let s = statement(DbBackend::Sqlite, sql(DbBackend::Sqlite), values);
        assert_eq!(
            s.sql,
            "UPDATE runs SET status = ? WHERE id = ? AND status = 'running'"
        );
        assert_eq!(
            s.values.map(|v| v.0),
            Some(vec![
                Value::from("completed".to_owned()),
                Value::from("r1".to_owned())
            ])
        );
        assert_eq!(
            status_filter(DbBackend::Postgres, 1, RunStatus::Running),
            "$2"
        );
    }

    #[test]
    fn numbered_become_anonymous_in_order_of_appearance() {
        let (sql, values) = anonymous(
            "UPDATE t SET a = ?3, b = 'x?1' FROM (VALUES (?1, ?2), (?4, ?2)) WHERE c = ?3",
            vec![
                Value::from(1i64),
                Value::from("two".to_owned()),
                Value::from(3i64),
                Value::from(4i64),
            ],
        );
        assert_eq!(
            sql,
            "UPDATE t SET a = ?, b = 'x?1' FROM (VALUES (?, ?), (?, ?)) WHERE c = ?"
        );
        assert_eq!(
            values,
            vec![
                Value::from(3i64),
                Value::from(1i64),
                Value::from("two".to_owned()),
                Value::from(4i64),
                Value::from("two".to_owned()),
                Value::from(3i64),
            ]
        );
    }

    #[test]
    fn postgres_keeps_numbered_placeholders() {
        let s = statement(
            DbBackend::Postgres,
            "SELECT $2, $1".to_owned(),
            vec![Value::from(1i64), Value::from(2i64)],
        );
        assert_eq!(s.sql, "SELECT $2, $1");
        assert_eq!(
            s.values.map(|v| v.0),
            Some(vec![Value::from(1i64), Value::from(2i64)])
        );
    }

    #[test]
    fn unknown_numbers_bind_null_and_quotes_are_skipped() {
        let (sql, values) = anonymous("SELECT \"a?1\", ?9, ?1, `?1`", vec![Value::from(7i64)]);
        assert_eq!(sql, "SELECT \"a?1\", ?, ?, `?1`");
        assert_eq!(values, vec![Value::String(None), Value::from(7i64)]);
    }
}

//! PostgreSQL forms of the batched statements' row lists: instead of a `VALUES` list of
//! `n` tuples (a statement text per batch size, parsed, described and planned anew on
//! every call, and thrashing sqlx's per-connection statement cache), the rows go as one
//! array per column and come back with `UNNEST(...) WITH ORDINALITY`, so each batched
//! statement has one fixed text whatever its number of rows: prepared once per
//! connection, planned with a cached plan. [`Rows::relation`] writes that relation.
//!
//! sqlx binds arrays without NULL elements, so a nullable column goes as its values (a
//! placeholder where NULL) plus a `bool[]` of which are NULL, read back with `CASE`.
//! SQLite has no arrays: its statements keep their `VALUES` forms.

use sea_orm::Value;

use crate::engine::{EngineError, EngineResult};

/// The PostgreSQL type of a column passed as an array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ty {
    /// `text`
    Text,
    /// `int4`
    Int4,
    /// `int8`
    Int8,
    /// `float8`
    Float8,
}

impl Ty {
    fn array(self) -> &'static str {
        match self {
            Ty::Text => "text[]",
            Ty::Int4 => "int4[]",
            Ty::Int8 => "int8[]",
            Ty::Float8 => "float8[]",
        }
    }

    /// The type of a value of this variant (NULL or not), if it is one of the above.
    pub(super) fn of(v: &Value) -> Option<Ty> {
        match v {
            Value::String(_) => Some(Ty::Text),
            Value::Int(_) => Some(Ty::Int4),
            Value::BigInt(_) => Some(Ty::Int8),
            Value::Double(_) => Some(Ty::Float8),
            _ => None,
        }
    }
}

/// A column of a row list: its name in the relation, type and whether it may be NULL.
#[derive(Debug, Clone, Copy)]
pub(super) struct Col {
    /// Name of the column in the relation (a plain SQL identifier).
    pub name: &'static str,
    /// Its type.
    pub ty: Ty,
    /// Whether its values may be NULL (passed with a NULL mask).
    pub nullable: bool,
}

/// A non-NULL column.
pub(super) const fn col(name: &'static str, ty: Ty) -> Col {
    Col {
        name,
        ty,
        nullable: false,
    }
}

/// A nullable column.
pub(super) const fn null(name: &'static str, ty: Ty) -> Col {
    Col {
        name,
        ty,
        nullable: true,
    }
}

/// Rows to pass as one array per column.
pub(super) struct Rows {
    cols: Vec<Col>,
    /// Column-major values.
    values: Vec<Vec<Value>>,
}

impl Rows {
    /// An empty row list of `cols`.
    pub(super) fn new(cols: &[Col]) -> Self {
        Self {
            cols: cols.to_vec(),
            values: cols.iter().map(|_| Vec::new()).collect(),
        }
    }

    /// Appends a row (one value per column, in order).
    pub(super) fn push<const N: usize>(&mut self, row: [Value; N]) {
        self.push_iter(row);
    }

    /// Appends a row given as an iterator of values (one per column, in order).
    pub(super) fn push_iter(&mut self, row: impl IntoIterator<Item = Value>) {
        for (column, v) in self.values.iter_mut().zip(row) {
            column.push(v);
        }
    }

    /// The relation `(SELECT <cols>, ord FROM UNNEST($k::type[], ...) WITH ORDINALITY ...)`
    /// (to alias with `AS v`), its arrays appended to `values` (numbered after those already
    /// there). `ord` is each row's place in the list, from 1. Fails on a value of another
    /// type than its column's, or a NULL in a non-nullable column.
    pub(super) fn relation(self, values: &mut Vec<Value>) -> EngineResult<String> {
        let mut args = Vec::with_capacity(self.cols.len() * 2);
        let mut names = Vec::with_capacity(self.cols.len() * 2 + 1);
        let mut select = Vec::with_capacity(self.cols.len() + 1);
        for (k, (c, column)) in self.cols.iter().zip(self.values).enumerate() {
            let (array, mask) = arrays(c, column)?;
            values.push(array);
            args.push(format!("${}::{}", values.len(), c.ty.array()));
            names.push(format!("c{k}"));
            match mask {
                Some(mask) => {
                    values.push(Value::from(mask));
                    args.push(format!("${}::bool[]", values.len()));
                    names.push(format!("n{k}"));
                    select.push(format!(
                        "CASE WHEN u.n{k} THEN NULL ELSE u.c{k} END AS {}",
                        c.name
                    ));
                }
                None => select.push(format!("u.c{k} AS {}", c.name)),
            }
        }
        names.push("ord".to_owned());
        select.push("u.ord AS ord".to_owned());
        Ok(format!(
            "(SELECT {} FROM UNNEST({}) WITH ORDINALITY AS u({}))",
            select.join(", "),
            args.join(", "),
            names.join(", ")
        ))
    }
}

/// One column's array and, for a nullable column, its NULL mask.
fn arrays(c: &Col, column: Vec<Value>) -> EngineResult<(Value, Option<Vec<bool>>)> {
    let mut mask = c.nullable.then(|| Vec::with_capacity(column.len()));
    let mut is_null = |null: bool| -> EngineResult<()> {
        match &mut mask {
            Some(m) => {
                m.push(null);
                Ok(())
            }
            None if null => Err(EngineError::Storage(format!(
                "batched row: NULL in column {}",
                c.name
            ))),
            None => Ok(()),
        }
    };
    let wrong = || EngineError::Storage(format!("batched row: wrong type in column {}", c.name));
    let array = match c.ty {
        Ty::Text => Value::from(typed(column, &mut is_null, &wrong, |v| match v {
            Value::String(s) => Some(s),
            _ => None,
        })?),
        Ty::Int4 => Value::from(typed(column, &mut is_null, &wrong, |v| match v {
            Value::Int(n) => Some(n),
            _ => None,
        })?),
        Ty::Int8 => Value::from(typed(column, &mut is_null, &wrong, |v| match v {
            Value::BigInt(n) => Some(n),
            _ => None,
        })?),
        Ty::Float8 => Value::from(typed(column, &mut is_null, &wrong, |v| match v {
            Value::Double(n) => Some(n),
            _ => None,
        })?),
    };
    Ok((array, mask))
}

/// A column's values as `T`s (`pick`: the value's `Option<T>` when it is of `T`'s variant,
/// else `wrong`), NULLs reported to `is_null` and passed as `T::default()`.
fn typed<T: Default>(
    column: Vec<Value>,
    is_null: &mut impl FnMut(bool) -> EngineResult<()>,
    wrong: &impl Fn() -> EngineError,
    pick: impl Fn(Value) -> Option<Option<T>>,
) -> EngineResult<Vec<T>> {
    let mut out = Vec::with_capacity(column.len());
    for v in column {
        let n = pick(v).ok_or_else(wrong)?;
        is_null(n.is_none())?;
        out.push(n.unwrap_or_default());
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn relation_text_does_not_depend_on_the_row_count() {
        let cols = [col("id", Ty::Text), null("n", Ty::Int8)];
        let text = |rows: usize| {
            let mut r = Rows::new(&cols);
            for i in 0..rows {
                r.push([
                    Value::from(format!("r{i}")),
                    Value::BigInt((i % 2 == 0).then_some(1)),
                ]);
            }
            let mut values = vec![Value::from(7i64)];
            let sql = r.relation(&mut values).expect("relation");
            (sql, values.len())
        };
        let (one, n1) = text(1);
        let (many, n3) = text(3);
        assert_eq!(one, many);
        assert_eq!((n1, n3), (4, 4));
        assert_eq!(
            one,
            "(SELECT u.c0 AS id, CASE WHEN u.n1 THEN NULL ELSE u.c1 END AS n, u.ord AS ord \
             FROM UNNEST($2::text[], $3::int8[], $4::bool[]) WITH ORDINALITY AS u(c0, c1, n1, ord))"
        );
    }

    #[test]
    fn nulls_go_in_the_mask_and_bad_values_fail() {
        let mut r = Rows::new(&[null("s", Ty::Text)]);
        r.push([Value::String(None)]);
        r.push([Value::from("x".to_owned())]);
        let mut values = Vec::new();
        r.relation(&mut values).expect("relation");
        assert_eq!(values[1], Value::from(vec![true, false]));
        assert_eq!(values[0], Value::from(vec![String::new(), "x".to_owned()]));

        let mut r = Rows::new(&[col("s", Ty::Text)]);
        r.push([Value::String(None)]);
        assert!(r.relation(&mut Vec::new()).is_err());
        let mut r = Rows::new(&[col("s", Ty::Int8)]);
        r.push([Value::from("x".to_owned())]);
        assert!(r.relation(&mut Vec::new()).is_err());
    }
}

//! The short CI run of the fuzz targets (scenario 10 of the reliability suite): every
//! service's fuzzing entry (`stackshift_server::api::fuzz`, the same functions the
//! cargo-fuzz targets in `fuzz/` call) runs over the committed seed corpus in
//! `fuzz/corpus/<service>/`, the hostile seeds built here (NUL bytes, bad UTF-8, huge and
//! overlong varints, extreme durations and timestamps, deep JSON) and random mutations of
//! them for a bounded time. A panic fails the test. `STACKSHIFT_FUZZ_SECS` sets the time
//! per service (default 2 s); `STACKSHIFT_FUZZ_WRITE_CORPUS=1` rewrites the seed corpus
//! files used by `cargo fuzz run`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use prost::Message;
use rand::{Rng, SeedableRng, rngs::StdRng};
use stackshift_proto::v1 as pb;
use stackshift_server::api::fuzz;

/// A varint as protobuf encodes it.
fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field.
fn field_bytes(num: u32, payload: &[u8], out: &mut Vec<u8>) {
    varint(u64::from(num) << 3 | 2, out);
    varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

fn deep_json(depth: usize) -> Vec<u8> {
    let mut v = vec![b'['; depth];
    v.extend(std::iter::repeat_n(b']', depth));
    v
}

fn deep_object(depth: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for _ in 0..depth {
        v.extend_from_slice(b"{\"a\":");
    }
    v.extend_from_slice(b"1");
    v.extend(std::iter::repeat_n(b'}', depth));
    v
}

fn huge_dur() -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::MAX,
        nanos: i32::MAX,
    }
}

fn bad_ts() -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: i64::MIN,
        nanos: -1,
    }
}

/// Raw hostile messages usable by any request type: every field number 1..=12 as a
/// string/bytes field holding NUL bytes, bad UTF-8 and deep JSON, as a huge varint, and an
/// overlong (11-byte) varint.
fn generic_seeds() -> Vec<Vec<u8>> {
    let payloads: Vec<Vec<u8>> = vec![
        b"a\0b".to_vec(),
        vec![0xff, 0xfe, 0xc3, 0x28],
        deep_json(5_000),
        deep_object(200),
        b"{\"a\":1e999999}".to_vec(),
        b"18446744073709551616".to_vec(),
        vec![b'x'; 70_000],
    ];
    let mut out = Vec::new();
    for num in 1..=12u32 {
        for p in &payloads {
            let mut m = Vec::new();
            field_bytes(num, p, &mut m);
            out.push(m);
        }
        let mut m = Vec::new();
        varint(u64::from(num) << 3, &mut m);
        varint(u64::MAX, &mut m);
        out.push(m);
        let mut m = Vec::new();
        varint(u64::from(num) << 3, &mut m);
        m.extend_from_slice(&[0xff; 11]);
        out.push(m);
        // A length prefix far beyond the input.
        let mut m = Vec::new();
        varint(u64::from(num) << 3 | 2, &mut m);
        varint(u64::MAX >> 1, &mut m);
        out.push(m);
    }
    out
}

/// Typed hostile requests for the fields with conversions: extreme durations and
/// timestamps, NUL bytes in names, deep JSON payloads. Each is prefixed with its selector.
fn typed_seeds(service: &str) -> Vec<Vec<u8>> {
    let deep = deep_json(129);
    let with = |sel: u8, m: Vec<u8>| [vec![sel], m].concat();
    match service {
        "jobs" => vec![
            with(
                0,
                pb::StartRunRequest {
                    job: "job\0".into(),
                    payload: deep.clone(),
                    idempotency_ttl: Some(huge_dur()),
                    lease_timeout: Some(huge_dur()),
                    delay: Some(huge_dur()),
                    run_at: Some(bad_ts()),
                    retry_policy: Some(pb::RetryPolicy {
                        max_attempts: i32::MAX,
                        backoff_coefficient: f64::NAN,
                        initial_interval: Some(huge_dur()),
                        maximum_interval: Some(huge_dur()),
                    }),
                    priority: i32::MIN,
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            with(
                2,
                pb::ListRunsRequest {
                    status: i32::MAX,
                    created_after: Some(bad_ts()),
                    page_size: i32::MIN,
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
        ],
        "state" => vec![
            with(
                1,
                pb::SetStateRequest {
                    key: "k\0".into(),
                    value: deep,
                    expected_version: Some(i64::MIN),
                    expiration: Some(pb::set_state_request::Expiration::Ttl(huge_dur())),
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            with(
                3,
                pb::IncrementStateRequest {
                    key: "n".into(),
                    by: Some(i64::MAX),
                    ttl: Some(prost_types::Duration {
                        seconds: i64::MIN,
                        nanos: 0,
                    }),
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
        ],
        "events" => vec![with(
            0,
            pb::PublishEventRequest {
                name: "e\0".into(),
                payload: deep,
                ..Default::default()
            }
            .encode_to_vec(),
        )],
        _ => Vec::new(),
    }
}

fn corpus_dir(service: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(service)
}

/// The seeds of one service: committed corpus, typed seeds, and the generic seeds under
/// every selector byte the service uses.
fn seeds(service: &str) -> Vec<Vec<u8>> {
    let mut out = typed_seeds(service);
    for g in generic_seeds() {
        for sel in 0..8u8 {
            out.push([vec![sel], g.clone()].concat());
        }
    }
    if let Ok(dir) = std::fs::read_dir(corpus_dir(service)) {
        for e in dir.flatten() {
            if let Ok(b) = std::fs::read(e.path()) {
                out.push(b);
            }
        }
    }
    out
}

/// One random mutation: flip, insert, delete or overwrite bytes, or splice two seeds.
fn mutate(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut b = seeds[rng.random_range(0..seeds.len())].clone();
    for _ in 0..rng.random_range(1..8) {
        let len = b.len();
        match rng.random_range(0..5) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                b[i] ^= 1 << rng.random_range(0..8);
            }
            1 => {
                let i = rng.random_range(0..=len);
                b.insert(i, rng.random());
            }
            2 if len > 1 => {
                let i = rng.random_range(1..len);
                b.remove(i);
            }
            3 if len > 0 => {
                let i = rng.random_range(0..len);
                b[i] = [0x00, 0xff, 0x80, 0x7f][rng.random_range(0..4)];
            }
            _ => {
                let other = &seeds[rng.random_range(0..seeds.len())];
                let cut = rng.random_range(0..=b.len());
                let from = rng.random_range(0..=other.len());
                b.truncate(cut);
                b.extend_from_slice(&other[from..]);
            }
        }
    }
    b
}

#[test]
fn fuzz_targets_survive_hostile_and_mutated_input() {
    let secs: u64 = std::env::var("STACKSHIFT_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let write = std::env::var("STACKSHIFT_FUZZ_WRITE_CORPUS").is_ok_and(|v| v == "1");
    for (service, entry) in fuzz::SERVICES.iter().zip(fuzz::ALL) {
        let seeds = seeds(service);
        if write {
            let dir = corpus_dir(service);
            std::fs::create_dir_all(&dir).unwrap();
            let mut keep = typed_seeds(service);
            for (i, g) in generic_seeds().into_iter().enumerate().step_by(3) {
                keep.push([vec![i as u8], g].concat());
            }
            keep.retain(|s| s.len() <= 8 * 1024);
            for (i, s) in keep.iter().enumerate() {
                std::fs::write(dir.join(format!("seed-{i:03}")), s).unwrap();
            }
        }
        for s in &seeds {
            entry(s);
        }
        let mut rng = StdRng::seed_from_u64(0x05ac_51f7);
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut runs = seeds.len();
        while Instant::now() < deadline {
            for _ in 0..64 {
                entry(&mutate(&mut rng, &seeds));
            }
            runs += 64;
        }
        eprintln!("fuzz {service}: {runs} inputs, no panic");
    }
}

//! PDU codec throughput: decoding typical received PDUs and encoding outgoing texts.
//! Needs `[[bench]] name = "pdu" harness = false` in Cargo.toml.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use gsmgw::modem::pdu::{decode, encode_submit, SubmitOptions};

/// Part 1 of a real 2-part GSM 7-bit DELIVER and a UCS-2 DELIVER (tests/data/pdu/pdus.jsonl:
/// mm-deliver-multipart-1, pm-deliver-ucs2-zh).
const GSM7_DELIVER: &str = "07912160130320F5440B916171056429F5000021405291650569A00500034C0201A9E8F41C949E83C2207B599E07B1DFEE33885E9ED341E4F23C7D7697C920FA1B54C697E5E3F4BC0C6AD7D9F434081E96D341E3303C2C4EB3D3F4BC0B94A483E6E8779D4D06CDD1EF3BA80E0785E7A0B7BB0C6A97E7F3F0B9CC02B9DF7450780EA2DFDF2C50780EA2A3CBA0BA9B5C96B3F369F71954768FDFE4B4FB0C9297E1F2F2BCECA6CF41";
const UCS2_DELIVER: &str = "07914306073011F0040B914316709807F2000880604290224080084E2D5174901A8BAF";

fn decoding(c: &mut Criterion) {
    c.bench_function("decode gsm7 deliver", |b| {
        b.iter(|| decode(black_box(GSM7_DELIVER), true))
    });
    c.bench_function("decode ucs2 deliver", |b| {
        b.iter(|| decode(black_box(UCS2_DELIVER), true))
    });
}

fn encoding(c: &mut Criterion) {
    let opts = SubmitOptions::default();
    let short = "Relay 1 is now ON";
    let long = "Alarm armed. {Zone 3} door opened at 22:14 – € cost ".repeat(8);
    let emoji = "Heating on 🔥 ".repeat(10);
    c.bench_function("encode short gsm7", |b| {
        b.iter(|| encode_submit(black_box("+447700900123"), black_box(short), &opts))
    });
    c.bench_function("encode long ucs2 concatenated", |b| {
        b.iter(|| encode_submit(black_box("+447700900123"), black_box(&long), &opts))
    });
    c.bench_function("encode emoji ucs2 concatenated", |b| {
        b.iter(|| encode_submit(black_box("+447700900123"), black_box(&emoji), &opts))
    });
}

criterion_group!(benches, decoding, encoding);
criterion_main!(benches);

//! Parsing speed: a 10 000-instruction Dockerfile (continuations, heredocs, JSON and
//! shell forms, flags) through the scanner, the grammar and the typed instructions.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn big_dockerfile(n: usize) -> String {
    let mut s = String::from("# syntax=docker/dockerfile:1\nARG BASE=busybox\nFROM ${BASE} AS build\n");
    for i in 0..n {
        match i % 8 {
            0 => s.push_str(&format!(
                "RUN --mount=type=cache,target=/c{i} echo step {i} && \\\n    echo continued {i}\n"
            )),
            1 => s.push_str(&format!("ENV K{i}=v{i} OTHER{i}=\"quoted value {i}\"\n")),
            2 => s.push_str(&format!("COPY --chown=1000:1000 src/{i} /app/{i}/\n")),
            3 => s.push_str(&format!("LABEL l{i}=\"x\" m{i}=y\n")),
            4 => s.push_str(&format!("RUN [\"/bin/sh\", \"-c\", \"echo {i}\"]\n")),
            5 => s.push_str(&format!("RUN <<EOF{i}\necho heredoc {i}\nEOF{i}\n")),
            6 => s.push_str(&format!("WORKDIR /w/{i}\n")),
            _ => s.push_str(&format!("ARG A{i}=${{BASE:-x}}\n")),
        }
    }
    s
}

fn bench(c: &mut Criterion) {
    let src = big_dockerfile(10_000);
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(10_000));
    g.sample_size(20);
    g.bench_function("10k instructions: ast", |b| b.iter(|| strata_frontend::parse(src.as_bytes()).unwrap()));
    g.bench_function("10k instructions: ast + typed", |b| {
        b.iter(|| {
            let p = strata_frontend::parse(src.as_bytes()).unwrap();
            strata_frontend::instructions::parse_dockerfile(&p).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

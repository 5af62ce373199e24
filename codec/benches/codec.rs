//! Codec benches: encode, decode, recode MB/s per core for K in {16..256}
//! and S in {1024, 16384}, and the `rlnc` crate's decode at the same K and S
//! in the same run. Throughput counts the generation's K*S source bytes.
//! Run: `cargo bench -p ccfd-codec --bench codec` (add `-- decode` to filter).

use std::time::Duration;

use ccfd_codec::{coefficients, Decoder, Generation};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const KS: [usize; 5] = [16, 32, 64, 128, 256];
const SS: [usize; 2] = [1024, 16384];

fn random(len: usize, rng: &mut StdRng) -> Vec<u8> {
    (0..len).map(|_| rng.random()).collect()
}

/// Seeded packets (coefficients expanded up front) until they reach full rank.
fn full_rank_packets(g: &Generation, rng: &mut StdRng) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut d = Decoder::new(g.k(), g.symbol_size(), g.len()).unwrap();
    let mut packets = Vec::new();
    while !d.is_complete() {
        let seed: u64 = rng.random();
        let c = coefficients::from_seed(seed, g.k());
        let p = g.coded(seed);
        d.receive(&c, &p).unwrap();
        packets.push((c, p));
    }
    packets
}

/// Mean packets beyond K needed to decode (dense, seeded coefficients).
fn print_overhead() {
    let mut rng = StdRng::seed_from_u64(7);
    println!("mean extra packets beyond K (dense RLNC, 1000 trials each):");
    for k in KS {
        let g = &Generation::split(&random(k, &mut rng), k, 1).unwrap()[0];
        let trials = 1000;
        let extra: usize = (0..trials).map(|_| full_rank_packets(g, &mut rng).len() - k).sum();
        let mean = extra as f64 / trials as f64;
        println!("  K={k:3}: {mean:.4} packets ({:.3}% of K)", 100.0 * mean / k as f64);
    }
}

fn codec(c: &mut Criterion) {
    print_overhead();
    let mut rng = StdRng::seed_from_u64(1);
    for s in SS {
        let mut group = c.benchmark_group(format!("S={s}"));
        group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
        for k in KS {
            let data = random(k * s, &mut rng);
            let g = Generation::split(&data, k, s).unwrap().remove(0);
            group.throughput(Throughput::Bytes((k * s) as u64));

            let mut seed = 0u64;
            let coeffs: Vec<Vec<u8>> = (0..64).map(|i| coefficients::from_seed(i, k)).collect();
            let mut out = vec![0u8; s];
            group.bench_function(BenchmarkId::new("encode", k), |b| {
                b.iter(|| {
                    seed += 1;
                    g.combine_into(&coeffs[(seed % 64) as usize], &mut out);
                    std::hint::black_box(&out);
                })
            });

            let packets = full_rank_packets(&g, &mut rng);
            group.bench_function(BenchmarkId::new("decode", k), |b| {
                b.iter(|| {
                    let mut d = Decoder::new(k, s, k * s).unwrap();
                    for (c, p) in &packets {
                        d.receive(c, p).unwrap();
                    }
                    std::hint::black_box(d.data())
                })
            });

            let mut full = Decoder::new(k, s, k * s).unwrap();
            for (c, p) in &packets {
                full.receive(c, p).unwrap();
            }
            let mut recode_rng = StdRng::seed_from_u64(2);
            group.bench_function(BenchmarkId::new("recode", k), |b| b.iter(|| std::hint::black_box(full.recode(&mut recode_rng))));

            // The rlnc crate: K*S - 1 bytes plus its boundary marker make exactly S-byte pieces.
            let enc = rlnc::full::Encoder::new(data[..k * s - 1].to_vec(), k).unwrap();
            assert_eq!(enc.get_piece_byte_len(), s);
            let coded: Vec<Vec<u8>> = (0..k + 16).map(|_| enc.code(&mut rng)).collect();
            group.bench_function(BenchmarkId::new("rlnc-crate-decode", k), |b| {
                b.iter(|| {
                    let mut d = rlnc::full::Decoder::new(s, k).unwrap();
                    for p in &coded {
                        if d.is_already_decoded() {
                            break;
                        }
                        let _ = d.decode(p);
                    }
                    std::hint::black_box(d.is_already_decoded())
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, codec);
criterion_main!(benches);

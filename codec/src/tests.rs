//! Codec properties: decoding from random loss patterns, recoding chains,
//! rank bounds, non-innovative detection.

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

fn piece(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.random()).collect()
}

/// Feeds seeded coded packets (dropping each with `loss` percent) until full rank.
fn decode_with_loss(g: &Generation, loss: u32, rng: &mut StdRng) -> (Decoder, u64) {
    let mut d = Decoder::new(g.k(), g.symbol_size(), g.len()).unwrap();
    let mut sent = 0u64;
    while !d.is_complete() {
        sent += 1;
        assert!(sent < 10 * g.k() as u64 + 100, "no full rank after {sent} packets");
        let seed: u64 = rng.random();
        if rng.random_range(0..100) < loss {
            continue;
        }
        d.receive(&coefficients::from_seed(seed, g.k()), &g.coded(seed)).unwrap();
        assert!(d.rank() <= g.k());
    }
    (d, sent)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_k_s_and_loss_decode_exactly(k in 1usize..=256, s in 1usize..80, extra in 0usize..500, loss in 0u32..60, seed: u64) {
        let data = piece(k * s - (extra % (k * s)), seed);
        let mut rng = StdRng::seed_from_u64(seed ^ 1);
        for g in Generation::split(&data, k, s).unwrap() {
            let (d, _) = decode_with_loss(&g, loss, &mut rng);
            prop_assert_eq!(d.data().unwrap(), g.data().to_vec());
        }
    }

    #[test]
    fn systematic_then_coded_mix_decodes(k in 1usize..64, s in 1usize..64, seed: u64) {
        let data = piece(k * s, seed);
        let g = &Generation::split(&data, k, s).unwrap()[0];
        let mut d = Decoder::new(k, s, g.len()).unwrap();
        let mut rng = StdRng::seed_from_u64(seed);
        for i in (0..k).filter(|_| rng.random_bool(0.5)) {
            let coeffs = packet::Coefficients::Systematic(i as u16).expand(k);
            prop_assert!(d.receive(&coeffs, g.symbol(i)).unwrap());
        }
        while !d.is_complete() {
            let seed: u64 = rng.random();
            d.receive(&coefficients::from_seed(seed, k), &g.coded(seed)).unwrap();
        }
        prop_assert_eq!(d.data().unwrap(), data);
    }

    /// Source -> A -> B -> C with loss on every hop; each relay recodes from
    /// what it has so far, while still receiving.
    #[test]
    fn recoding_chain_over_three_hops_with_loss(k in 1usize..48, s in 1usize..48, seed: u64) {
        let data = piece(k * s, seed);
        let g = &Generation::split(&data, k, s).unwrap()[0];
        let mut rng = StdRng::seed_from_u64(seed);
        let mut hops: Vec<Decoder> = (0..3).map(|_| Decoder::new(k, s, g.len()).unwrap()).collect();
        let mut rounds = 0;
        while !hops[2].is_complete() {
            rounds += 1;
            prop_assert!(rounds < 20 * k + 200, "chain stalled");
            let seed: u64 = rng.random();
            if rng.random_range(0..100) >= 20 {
                hops[0].receive(&coefficients::from_seed(seed, k), &g.coded(seed)).unwrap();
            }
            for hop in 1..3 {
                if let Some((c, p)) = hops[hop - 1].recode(&mut rng) {
                    if rng.random_range(0..100) >= 20 {
                        hops[hop].receive(&c, &p).unwrap();
                    }
                }
            }
        }
        prop_assert_eq!(hops[2].data().unwrap(), data);
    }
}

#[test]
fn non_innovative_packets_are_detected_and_leave_rows_alone() {
    let data = piece(16 * 32, 5);
    let g = &Generation::split(&data, 16, 32).unwrap()[0];
    let mut d = Decoder::new(16, 32, g.len()).unwrap();
    assert!(d.receive(&coefficients::from_seed(1, 16), &g.coded(1)).unwrap());
    assert!(!d.receive(&coefficients::from_seed(1, 16), &g.coded(1)).unwrap(), "the same packet twice");
    // A combination of what we have is not innovative either, even with a garbage payload:
    // the coefficients alone decide, and the payload is never read.
    let (c, _) = d.recode(&mut StdRng::seed_from_u64(2)).unwrap();
    assert!(!d.receive(&c, &[0xEE; 32]).unwrap());
    assert_eq!(d.rank(), 1);
    assert_eq!(d.counts(), (3, 2));
    assert!(d.receive(&[0u8; 16], &[0; 32]).is_ok_and(|innovative| !innovative));
    assert_eq!(d.receive(&[1u8; 15], &[0; 32]), Err(CodingError::Coefficients { got: 15, want: 16 }));
    assert_eq!(d.receive(&[1u8; 16], &[0; 31]), Err(CodingError::Payload { got: 31, want: 32 }));
}

#[test]
fn dense_k64_needs_few_extra_packets() {
    // Over GF(256) a random K x K matrix is singular with probability ~1/255:
    // the mean overhead is a small fraction of a packet.
    let data = piece(64 * 64, 9);
    let g = &Generation::split(&data, 64, 64).unwrap()[0];
    let mut rng = StdRng::seed_from_u64(3);
    let trials = 200;
    let extra: u64 = (0..trials).map(|_| decode_with_loss(g, 0, &mut rng).1 - 64).sum();
    let mean = extra as f64 / f64::from(trials);
    assert!(mean < 0.64, "mean extra packets {mean} (>= 1% of K)");
}

#[test]
fn padding_never_reaches_the_output() {
    let data = piece(1000, 4);
    let gens = Generation::split(&data, 8, 64).unwrap();
    assert_eq!(gens.len(), 2);
    assert_eq!(gens[1].len(), 1000 - 512);
    let mut rng = StdRng::seed_from_u64(1);
    let out: Vec<u8> = gens.iter().flat_map(|g| decode_with_loss(g, 10, &mut rng).0.data().unwrap()).collect();
    assert_eq!(out, data);
    assert_eq!(Generation::split(&data, 0, 1), Err(CodingError::Parameters));
    assert_eq!(Generation::split(&data, 257, 1), Err(CodingError::Parameters));
}

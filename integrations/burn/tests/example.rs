//! The training example, shorter: both optimizers must learn the spirals, with the same bits.

#[path = "../examples/train.rs"]
#[allow(dead_code)]
mod train;

#[test]
fn the_example_learns_with_both_lions_and_they_agree() {
    let reports = train::run(support::spirals::Settings::QUICK);
    println!("{}", train::table(&reports));
    for r in &reports {
        r.assert_learned();
    }
    assert!(
        train::same_bits(&reports[0].params, &reports[1].params),
        "f32: the same parameters"
    );
}

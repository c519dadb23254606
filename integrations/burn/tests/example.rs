//! The training example, shorter: both optimizers must learn the spirals, with the same bits.

#[path = "../examples/train.rs"]
#[allow(dead_code)]
mod train;

#[test]
fn the_example_learns_with_both_lions_and_they_agree() {
    let reports = train::run(train::Settings::QUICK);
    println!("{}", train::table(&reports));
    for r in &reports {
        let last = r.rows.last().expect("rows");
        assert!(
            last.1 < 0.5 * r.initial_loss,
            "{}: loss {} -> {}",
            r.name,
            r.initial_loss,
            last.1
        );
        assert!(
            r.test_accuracy > 0.8,
            "{}: test accuracy {}",
            r.name,
            r.test_accuracy
        );
    }
    let bits = |p: &[Vec<f32>]| {
        p.iter()
            .map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        bits(&reports[0].params),
        bits(&reports[1].params),
        "f32: the same parameters"
    );
}

//! The training example, shorter: both optimizers must learn the spirals.

#[path = "../examples/train.rs"]
#[allow(dead_code)]
mod train;

#[test]
fn the_example_learns_with_lion_and_with_adamw() -> candle_core::Result<()> {
    let reports = train::run(train::Settings::QUICK)?;
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
    Ok(())
}

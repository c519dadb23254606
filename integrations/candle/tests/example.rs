//! The training example, shorter: both optimizers must learn the spirals.

#[path = "../examples/train.rs"]
#[allow(dead_code)]
mod train;

#[test]
fn the_example_learns_with_lion_and_with_adamw() -> candle_core::Result<()> {
    let reports = train::run(support::spirals::Settings::QUICK)?;
    println!("{}", train::table(&reports));
    for r in &reports {
        r.assert_learned();
    }
    Ok(())
}

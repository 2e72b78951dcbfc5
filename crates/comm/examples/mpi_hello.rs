//! The lesson's `mpi.py` in Rust: run with `hpcbox mpiexec -n 4 mpi_hello`.

fn main() -> Result<(), hpcbox_comm::Error> {
    let world = hpcbox_comm::init()?;
    println!(
        "I am rank {} in group of {} processes.",
        world.rank(),
        world.size()
    );
    Ok(())
}

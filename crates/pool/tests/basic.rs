//! `examples/basic.rs` prints exactly what `basic.py` prints.

#[path = "../examples/basic.rs"]
#[allow(dead_code)]
mod basic;

#[test]
fn basic_example_prints_what_basic_py_prints() {
    let mut out = Vec::new();
    basic::run(&mut out).unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), "5\n[2, 3, 4]\n");
}

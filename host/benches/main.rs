//! The benchmarks, one binary (one link of the whole host instead of one
//! per bench): `cargo bench -p helix-build --bench benches -- NAME...`
//! runs the named ones in this process, in order; `bench/run` runs each in
//! a process of its own and prints one table of their rows.

mod checkout;
mod common;
mod memory;
mod plugin_call;
mod real_build;
mod realistic_build;
mod runtime;
mod scale_out;
mod submit;
mod unchanged;

/// Every bench by the name `bench/run` and the arguments use.
const BENCHES: &[(&str, fn())] = &[
    ("runtime", runtime::main),
    ("plugin_call", plugin_call::main),
    ("submit", submit::main),
    ("memory", memory::main),
    ("real_build", real_build::main),
    ("realistic_build", realistic_build::main),
    ("scale_out", scale_out::main),
    ("checkout", checkout::main),
    ("unchanged", unchanged::main),
];

fn main() {
    // `cargo bench` passes `--bench`; names are the other arguments.
    let names: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    if names.is_empty() {
        let known: Vec<&str> = BENCHES.iter().map(|(name, _)| *name).collect();
        eprintln!("name the benches to run: {}", known.join(" "));
        std::process::exit(2);
    }
    for name in &names {
        match BENCHES.iter().find(|(known, _)| known == name) {
            Some((_, bench)) => bench(),
            None => {
                eprintln!("no bench is called {name:?}");
                std::process::exit(2);
            }
        }
    }
}

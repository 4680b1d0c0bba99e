//! The one wasmtime engine all builders share: pooling allocation sized
//! from the worker count and memory limits, and an epoch ticker so a guest
//! that never calls the host still yields and can be timed out.

use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances; a spinning guest yields this often.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Core instances a single builder component may create (a Rust
/// `wasm32-wasip2` component uses about four: the program, the WASI
/// adapter and their shims).
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
const MEMORIES_PER_COMPONENT: u32 = 4;
const TABLES_PER_COMPONENT: u32 = 8;

/// What the pooling allocator must hold at once.
#[derive(Debug, Clone, Copy)]
pub struct PoolSizing {
    /// Builder instances alive at the same time: one per worker, plus
    /// headroom for load-time `info` calls and `plugin check`.
    pub instances: u32,
    /// The largest linear memory any builder may grow to.
    pub max_memory_bytes: usize,
}

pub(crate) fn new_engine(sizing: PoolSizing) -> wasmtime::Result<Engine> {
    let n = sizing.instances.max(1);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(n)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .total_core_instances(n * CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .total_memories(n * MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .total_tables(n * TABLES_PER_COMPONENT)
        .total_stacks(n)
        .max_memory_size(sizing.max_memory_bytes);

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&config)?;
    spawn_epoch_ticker(&engine);
    Ok(engine)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until the engine is
/// dropped. A thread, not a tokio task, so a runtime starved by busy
/// guests cannot stop the clock that interrupts them.
fn spawn_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("helix-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch ticker thread");
}

//! The Python boundary: the `maitre._maitre` extension module.
use pyo3::prelude::*;

pub mod access_log;
pub mod environ;
pub mod lead;
pub mod lend;
pub mod log_relay;
pub mod malloc;
pub mod pool;
pub mod queue;
pub mod server;
pub mod settings;
pub mod watchdog;
pub mod wsgi;

#[pymodule]
#[pyo3(name = "_maitre")]
fn native_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Route the engine's `log` records to Python's `logging` (loggers
    // "maitre" and "maitre.queue"); a second import keeps the first bridge.
    log_relay::install(m.py());
    m.add_function(wrap_pyfunction!(settings::parse_settings, m)?)?;
    m.add_function(wrap_pyfunction!(settings::check_combinations, m)?)?;
    m.add_function(wrap_pyfunction!(settings::settings_table, m)?)?;
    m.add_function(wrap_pyfunction!(crate::metrics::metrics_layout, m)?)?;
    m.add_class::<server::Server>()?;
    Ok(())
}

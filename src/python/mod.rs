//! The Python boundary: the `maitre._maitre` extension module.
use pyo3::prelude::*;

pub mod settings;

#[pymodule]
#[pyo3(name = "_maitre")]
fn native_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(settings::parse_settings, m)?)?;
    m.add_function(wrap_pyfunction!(settings::check_combinations, m)?)?;
    m.add_function(wrap_pyfunction!(settings::settings_table, m)?)?;
    Ok(())
}

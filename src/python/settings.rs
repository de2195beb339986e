//! Settings across the boundary: Python values in, Waitress-shaped values out,
//! validated by the one table in `config.rs`.
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PySet, PyString, PyTuple};

use crate::config::{self, Config, ConfigError, Value, SETTINGS};

/// A Python value as the casts see it. Booleans are checked before ints
/// (`bool` is an `int` subclass); anything unusual goes through `str()`,
/// which is what Waitress's `str`-cast settings do with it.
pub fn to_value(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    if obj.is_none() {
        return Ok(Value::None);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() {
        return Ok(Value::Int(obj.extract()?));
    }
    if obj.is_instance_of::<PyFloat>() {
        // Python's int() truncates a float toward zero.
        return Ok(Value::Int(obj.extract::<f64>()?.trunc() as i64));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::Str(s.to_str()?.to_owned()));
    }
    if obj.is_instance_of::<PyList>()
        || obj.is_instance_of::<PyTuple>()
        || obj.is_instance_of::<PySet>()
    {
        let items = obj
            .try_iter()?
            .map(|i| i.and_then(|i| Ok(i.str()?.to_str()?.to_owned())));
        return Ok(Value::List(items.collect::<PyResult<_>>()?));
    }
    Ok(Value::Str(obj.str()?.to_str()?.to_owned()))
}

pub fn from_value(py: Python<'_>, v: Value) -> PyResult<Py<PyAny>> {
    Ok(match v {
        Value::None => py.None(),
        Value::Bool(b) => PyBool::new(py, b).to_owned().into_any().unbind(),
        Value::Int(i) => i.into_pyobject(py)?.into_any().unbind(),
        Value::Str(s) => PyString::new(py, &s).into_any().unbind(),
        Value::List(items) => PyList::new(py, items)?.into_any().unbind(),
    })
}

/// Waitress raises TypeError where Python's own casts would (int(None),
/// iterating an int); the table reports those with Python's wording.
///
/// The table prefixes a cast error with the setting's name. `str(e)` must be
/// Waitress's exact text, so the name moves to an exception note (shown in
/// tracebacks since Python 3.11), which still tells the user what was wrong.
pub fn config_error(e: ConfigError) -> PyErr {
    let (setting, msg) = match e.0.split_once(": ") {
        Some((name, rest)) if config::setting(name).is_some() => {
            (Some(name.to_string()), rest.to_string())
        }
        _ => (None, e.0),
    };
    let type_error = [
        "object is not iterable",
        "can't convert non-string",
        "int() argument must be",
    ];
    let err = if type_error.iter().any(|t| msg.contains(t)) {
        PyTypeError::new_err(msg)
    } else {
        PyValueError::new_err(msg)
    };
    if let Some(name) = setting {
        Python::attach(|py| {
            let note = format!("while reading the setting {name:?}");
            if err.value(py).call_method1("add_note", (note,)).is_err() {
                PyErr::take(py); // Python < 3.11: no notes
            }
        });
    }
    err
}

/// Every setting by name, in Waitress's `adj.<name>` shape.
pub type Shaped = Vec<(String, Value)>;

/// Validate settings given as `(name, value)` pairs. Returns the typed
/// config, and also every setting in Waitress's attribute shape plus the
/// warnings (deprecations) to emit.
pub fn parse(pairs: &Bound<'_, PyList>) -> PyResult<(Config, Shaped, Vec<String>)> {
    let mut owned = Vec::with_capacity(pairs.len());
    for item in pairs.iter() {
        let (name, value): (String, Bound<'_, PyAny>) = item.extract()?;
        owned.push((name, to_value(&value)?));
    }
    let borrowed: Vec<(&str, Value)> = owned.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
    let (cfg, warnings) = config::from_pairs_with_warnings(&borrowed).map_err(config_error)?;
    let shaped = SETTINGS
        .iter()
        .filter_map(|s| cfg.value_of(s.name).map(|v| (s.name.to_string(), v)))
        .collect();
    Ok((cfg, shaped, warnings))
}

/// `parse_settings([(name, value), ...]) -> (dict, [warning, ...])`
#[pyfunction]
pub fn parse_settings<'py>(
    py: Python<'py>,
    pairs: &Bound<'py, PyList>,
) -> PyResult<(Bound<'py, PyDict>, Vec<String>)> {
    let (_, shaped, warnings) = parse(pairs)?;
    let dict = PyDict::new(py);
    for (name, value) in shaped {
        dict.set_item(name, from_value(py, value)?)?;
    }
    Ok((dict, warnings))
}

/// `check_combinations([name, ...])`: the host/port/listen/sockets/unix_socket
/// rules, for callers that hold values Rust never sees (socket objects).
#[pyfunction]
pub fn check_combinations(names: Vec<String>) -> PyResult<()> {
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    config::check_combinations(&names).map_err(config_error)
}

/// `settings_table() -> [(name, kind, default, help), ...]` in Waitress's order.
#[pyfunction]
pub fn settings_table() -> Vec<(&'static str, String, &'static str, &'static str)> {
    SETTINGS
        .iter()
        .map(|s| {
            (
                s.name,
                format!("{:?}", s.kind).to_lowercase(),
                s.default,
                s.help,
            )
        })
        .collect()
}

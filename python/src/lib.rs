//! Python bindings of neuropart (`neuropart._neuropart`, wrapped by the pure-Python package
//! in `python/neuropart/`, which adds NIR import and export). Thin: every function converts
//! arguments, releases the interpreter lock while the emulator works, and converts results;
//! the library does the work. Arrays cross as numpy arrays: spikes `bool [batch, T, neurons]`,
//! membranes `float32 [batch, T, neurons]`, weights `float32` in the projection's layout.
//! Errors: the library's user errors (bad networks, inputs, options) raise `ValueError`,
//! sizes over the memory limit `MemoryError`, device, file-system and divergence failures
//! `RuntimeError`, with the library's message. The library's parallel work runs in a thread
//! pool of this process (`device::in_pool`), so that a child made by `fork` (multiprocessing's
//! default on Linux) works instead of waiting for the parent's threads, which it has not.

//! One module per class ([`network`], [`substrate`], [`plan`], [`trainable`]), beside the
//! conversions of arguments and results ([`convert`]), images to spikes and MNIST ([`data`]),
//! the thread pool and backends ([`device`]) and [`spikes`].

// The extension exports nothing to Rust: its modules are private, and its documentation
// (`cargo doc`) is for the people who work on them.
#![allow(rustdoc::private_intra_doc_links)]

mod convert;
mod data;
mod device;
mod network;
mod plan;
mod spikes;
mod substrate;
mod trainable;

use convert::*;
use data::*;
use device::*;
use network::*;
use plan::*;
use spikes::*;
use substrate::*;
use trainable::*;

use ndarray::Array3;
use neuropart::gpu::{GpuBackend, GpuContext};
use neuropart::{
    AnalogConfig, Backend, Checkpoint, CpuBackend, Executor, Mode, Observe, PartitionOptions,
    PlanReport, Schedule, SpikeTrains, TrainConfig, Trainer,
};
use numpy::{IntoPyArray, PyArray1, PyArrayDyn, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::{PyMemoryError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

#[pymodule]
fn _neuropart(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Network>()?;
    m.add_class::<Substrate>()?;
    m.add_class::<Plan>()?;
    m.add_class::<Trainable>()?;
    m.add_class::<Trace>()?;
    m.add_function(wrap_pyfunction!(spikes_to_dense, m)?)?;
    m.add_function(wrap_pyfunction!(set_memory_limit, m)?)?;
    m.add_function(wrap_pyfunction!(encode_images, m)?)?;
    m.add_function(wrap_pyfunction!(load_mnist, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

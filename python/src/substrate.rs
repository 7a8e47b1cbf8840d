//! `neuropart.Substrate`: the chip (and a multi-chip system) a network runs on.

use crate::*;

/// A substrate (chip) description.
#[pyclass(module = "neuropart", from_py_object)]
#[derive(Clone)]
pub(crate) struct Substrate {
    pub(crate) inner: neuropart::Substrate,
}

#[pymethods]
impl Substrate {
    /// BrainScaleS-2 (512 neuron circuits, 256 synapse rows per hemisphere).
    #[staticmethod]
    fn bss2() -> Self {
        Substrate {
            inner: neuropart::Substrate::bss2(),
        }
    }

    /// A substrate from a TOML file.
    #[staticmethod]
    fn from_toml(path: PathBuf) -> PyResult<Self> {
        Ok(Substrate {
            inner: neuropart::Substrate::load(&path).map_err(to_py)?,
        })
    }

    /// Its name.
    #[getter]
    fn name(&self) -> String {
        self.inner.name.clone()
    }

    /// Neuron circuits per chip.
    #[getter]
    fn circuits(&self) -> usize {
        self.inner.circuits()
    }

    /// The multi-chip system (the `[system]` section) as a dict, or None for one chip.
    #[getter]
    fn system<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match &self.inner.system {
            Some(s) => json(py, s),
            None => Ok(py.None().into_bound(py)),
        }
    }

    /// This chip as a multi-chip system of `chips` chips (the `[system]` fields; the
    /// BrainScaleS-2 defaults for the rest): chips of one system run exchange spikes over
    /// links, each arriving `delivery_delay_us` after it was sent.
    #[pyo3(signature = (chips, topology = "star", delivery_delay_us = 2.0,
        link_events_per_us = 0.0, receive_buffer = 0))]
    fn with_system(
        &self,
        chips: i128,
        topology: &str,
        delivery_delay_us: f32,
        link_events_per_us: f32,
        receive_buffer: i128,
    ) -> PyResult<Self> {
        let chips = count("chips", chips, 1, u64::MAX)? as usize;
        let receive_buffer = count("receive_buffer", receive_buffer, 0, u64::MAX)? as usize;
        let topology = match topology {
            "star" => neuropart::LinkTopology::Star,
            "backplanes" => neuropart::LinkTopology::Backplanes,
            "mesh2d" => neuropart::LinkTopology::Mesh2d,
            "torus" => neuropart::LinkTopology::Torus,
            "all-to-all" => neuropart::LinkTopology::AllToAll,
            t => {
                return Err(PyValueError::new_err(format!(
                    "topology '{t}': use 'star', 'backplanes', 'mesh2d', 'torus' or 'all-to-all'"
                )))
            }
        };
        let mut inner = self.inner.clone();
        inner.system = Some(neuropart::System {
            chips,
            topology,
            delivery_delay_us,
            link_events_per_us,
            receive_buffer,
            ..Default::default()
        });
        inner.validate().map_err(to_py)?;
        Ok(Substrate { inner })
    }

    fn __repr__(&self) -> String {
        format!(
            "Substrate('{}', {} circuits)",
            self.inner.name,
            self.inner.circuits()
        )
    }
}

pub(crate) fn substrate_or_default(s: Option<PyRef<'_, Substrate>>) -> neuropart::Substrate {
    s.map_or_else(neuropart::Substrate::bss2, |s| s.inner.clone())
}

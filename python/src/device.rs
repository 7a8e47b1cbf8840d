//! Where the work runs: the process's own thread pool (fork-safe) and the backends.

use crate::*;

/// Run `f` in this process's thread pool. rayon's global pool is made once and its threads
/// do not survive `fork`: a child that used it would wait forever for work no thread takes. So
/// every library call runs in a pool owned by the process id that made it, rebuilt in a child.
pub(crate) fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> PyResult<R> {
    static POOL: Mutex<Option<(u32, Arc<rayon::ThreadPool>)>> = Mutex::new(None);
    let pid = std::process::id();
    let pool = {
        // Held only here, briefly; a panic elsewhere leaves the pool as good as it was.
        let mut guard = POOL.lock().unwrap_or_else(|p| p.into_inner());
        match &*guard {
            Some((owner, pool)) if *owner == pid => pool.clone(),
            _ => {
                let n = neuropart::worker_threads().map_err(to_py)?;
                let pool = Arc::new(
                    rayon::ThreadPoolBuilder::new()
                        .num_threads(n)
                        .build()
                        .map_err(|e| {
                            PyRuntimeError::new_err(format!(
                                "cannot start {n} worker threads (RAYON_NUM_THREADS): {e}"
                            ))
                        })?,
                );
                *guard = Some((pid, pool.clone()));
                pool
            }
        }
    };
    Ok(pool.install(f))
}

/// One GPU context per process (opening an adapter and compiling the kernels takes a while).
pub(crate) fn gpu_context() -> Result<Arc<GpuContext>, String> {
    static CTX: OnceLock<Result<Arc<GpuContext>, String>> = OnceLock::new();
    CTX.get_or_init(|| {
        neuropart::gpu::quiet_vulkan_loader();
        GpuContext::new().map(Arc::new).map_err(|e| e.to_string())
    })
    .clone()
}

pub(crate) fn backend(device: &str) -> PyResult<Box<dyn Backend>> {
    match device {
        "cpu" => Ok(Box::new(CpuBackend)),
        "gpu" => gpu_context()
            .map(|c| Box::new(GpuBackend::with_context(c)) as Box<dyn Backend>)
            .map_err(PyRuntimeError::new_err),
        "auto" => Ok(match gpu_context() {
            Ok(c) => Box::new(GpuBackend::with_context(c)),
            Err(_) => Box::new(CpuBackend),
        }),
        _ => Err(PyValueError::new_err(format!(
            "device '{device}': use 'cpu', 'gpu' or 'auto'"
        ))),
    }
}

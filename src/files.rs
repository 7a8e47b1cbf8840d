//! File output that is never left half-written (write a temporary file beside the target,
//! fsync it, rename it over the target: atomic on POSIX file systems; a symbolic link is
//! followed, so the file it points to is replaced, not the link), and the strictness checks
//! that serde does not make (a JSON object with a key given twice).

use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Write `bytes` to `path` atomically: readers see the old file or the new one, never a mix.
/// What is neither a regular file nor a folder (a device such as `/dev/null`, a named pipe,
/// `/dev/stdout`) is written into as it is: renaming over it would replace it with a file
/// (opening a named pipe waits for its reader). A folder is an error that names it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    // The path as given: the kernel follows `/dev/stdout` to a pipe, which `resolve_links`
    // cannot name.
    if let Ok(m) = std::fs::metadata(path) {
        if m.is_dir() {
            return Err(Error::io(
                path,
                std::io::Error::other("is a folder; give a file's path"),
            ));
        }
        if !m.is_file() {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| Error::io(path, e))?;
            return f
                .write_all(bytes)
                .and_then(|()| f.flush())
                .map_err(|e| Error::io(path, e));
        }
    }
    let path = resolve_links(path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    folder_over_no_file(&dir)?;
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&path, e));
    }
    Ok(())
}

/// The file a path finally names: symbolic links followed (also dangling ones, whose target
/// is then created).
fn resolve_links(path: &Path) -> Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&p).map_err(|e| Error::io(&p, e))?;
                p = match p.parent() {
                    Some(dir) if target.is_relative() => dir.join(target),
                    _ => target,
                };
            }
            _ => return Ok(p),
        }
    }
    Err(Error::io(
        path,
        std::io::Error::other("too many levels of symbolic links"),
    ))
}

/// Check that the folder `dir` can be written (creating it if needed), before long work
/// that writes into it.
pub fn check_writable(dir: &Path) -> Result<()> {
    folder_over_no_file(dir)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let probe = dir.join(format!(".neuropart-write-test{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| Error::io(dir, e))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// An error naming `dir` and the file in its way where an existing ancestor of `dir` (or
/// `dir` itself) is a file: the folder cannot be made there.
fn folder_over_no_file(dir: &Path) -> Result<()> {
    if let Some(file) = dir.ancestors().find(|a| a.is_file()) {
        return Err(Error::io(
            dir,
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "{} is a file; the output needs a folder (give another path)",
                    file.display()
                ),
            ),
        ));
    }
    Ok(())
}

/// An error naming the first key that a JSON object in `text` gives twice (serde keeps the
/// last value silently). Malformed text passes: the parser reports it.
pub fn reject_duplicate_json_keys(text: &str) -> std::result::Result<(), String> {
    use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
    struct Check;
    impl<'de> Visitor<'de> for Check {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E>(self, _: bool) -> std::result::Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> std::result::Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> std::result::Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> std::result::Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> std::result::Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> std::result::Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> std::result::Result<(), A::Error> {
            while a.next_element_seed(Seed)?.is_some() {}
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> std::result::Result<(), A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(k) = a.next_key::<String>()? {
                if !seen.insert(k.clone()) {
                    return Err(serde::de::Error::custom(format!(
                        "key \"{k}\" is given twice"
                    )));
                }
                a.next_value_seed(Seed)?;
            }
            Ok(())
        }
    }
    struct Seed;
    impl<'de> serde::de::DeserializeSeed<'de> for Seed {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
            d.deserialize_any(Check)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    match de.deserialize_any(Check) {
        Err(e) if e.to_string().contains("given twice") => Err(e.to_string()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn an_output_folder_over_a_file_is_an_error_naming_both() {
        let dir = std::env::temp_dir().join(format!("np-writable-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("taken");
        std::fs::write(&file, b"x").unwrap();
        for out in [file.clone(), file.join("sub")] {
            let e = check_writable(&out).unwrap_err().to_string();
            assert!(
                e.contains("taken is a file") && e.contains(&*out.to_string_lossy()),
                "{e}"
            );
        }
        assert_eq!(
            std::fs::read(&file).unwrap(),
            b"x",
            "the file is left alone"
        );
        check_writable(&dir.join("new")).unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A named pipe (like a device) is written into, not replaced by a file: directly and
    /// through a link. (A pipe in a folder of the test's own, not `/dev/null`: were the file
    /// renamed over it, nothing outside the test would be harmed.)
    #[cfg(target_os = "linux")]
    #[test]
    fn a_pipe_stays_a_pipe() {
        use std::io::Read;
        use std::os::unix::fs::FileTypeExt;
        let dir = std::env::temp_dir().join(format!("np-pipe-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (pipe, link) = (dir.join("pipe"), dir.join("out.json"));
        let made = std::process::Command::new("mkfifo").arg(&pipe).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
        std::os::unix::fs::symlink(&pipe, &link).unwrap();
        // Open for reading and writing, so that opening it to write does not wait (Linux).
        let mut reader = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&pipe)
            .unwrap();
        for (path, text) in [(&pipe, b"{1}"), (&link, b"{2}")] {
            write_atomic(path, text).unwrap();
            // Both still there before the read (which would wait for ever otherwise).
            let meta = std::fs::metadata(&pipe).unwrap();
            assert!(meta.file_type().is_fifo(), "{} replaced", path.display());
            let link_meta = std::fs::symlink_metadata(&link).unwrap();
            assert!(link_meta.file_type().is_symlink(), "the link replaced");
            let mut got = [0u8; 3];
            reader.read_exact(&mut got).unwrap();
            assert_eq!(&got, text);
        }
        let e = write_atomic(&dir, b"{}").unwrap_err().to_string();
        assert!(e.contains("is a folder"), "{e}");
        // No temporary file left beside them.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn duplicate_keys_are_found_at_any_depth() {
        assert!(reject_duplicate_json_keys(r#"{"a": 1, "b": [{"c": 2}]}"#).is_ok());
        let e = reject_duplicate_json_keys(r#"{"a": 1, "b": [{"c": 2, "c": 3}]}"#).unwrap_err();
        assert!(e.contains("\"c\"") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn writing_through_a_symlink_replaces_its_target() {
        let dir = std::env::temp_dir().join(format!("np-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("real.json");
        std::fs::write(&target, "old").unwrap();
        let link = dir.join("link.json");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("real.json", &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A text format of network, substrate and spike files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// TOML.
    Toml,
    /// JSON.
    Json,
}

impl Format {
    /// From the extension (`.json`/`.toml`, any case); otherwise from the content (JSON
    /// starts with `{`).
    pub fn of(path: &Path, text: &str) -> Format {
        match path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .as_deref()
        {
            Some("json") => Format::Json,
            Some("toml") => Format::Toml,
            _ if text.trim_start().starts_with('{') => Format::Json,
            _ => Format::Toml,
        }
    }

    /// Parse `text` as this format; JSON objects with a key given twice are refused.
    pub fn parse<T: serde::de::DeserializeOwned>(self, text: &str, path: &Path) -> Result<T> {
        let err = |format, message: String| Error::Parse {
            path: path.to_path_buf(),
            format,
            message,
        };
        match self {
            Format::Toml => toml::from_str(text).map_err(|e| err("TOML", e.to_string())),
            Format::Json => {
                crate::files::reject_duplicate_json_keys(text).map_err(|m| err("JSON", m))?;
                serde_json::from_str(text).map_err(|e| err("JSON", e.to_string()))
            }
        }
    }
}

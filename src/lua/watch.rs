//! Hot reload: watches the plugin and rule folders and asks for a reload when a script file is
//! saved, created or deleted.
//!
//! Editors save in many ways (write in place, write a temporary file and rename it over the
//! old one, delete and recreate), each a burst of file system events. The watcher therefore
//! waits until a folder has been quiet for the debounce period and then looks at each touched
//! `*.lua` file once: there → [`Reload::Changed`], gone → [`Reload::Removed`] (a plugin is
//! gone only when no folder of the plugin path has it: removing an override under /etc brings
//! back the stock copy). Only the folders and their `lib/` folders (shared helpers scripts
//! `require`) are watched, not what is below them; a change to a library is
//! [`Reload::Library`], which reloads the scripts that required it. A `lib/` folder created
//! while the gateway runs is watched from the next start (or SIGHUP reloads).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::bus::ScriptKind;
use crate::config::LuaConfig;

/// How long a folder must be quiet before its changes are reloaded.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// A reload the script task is asked to do, between two events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// Every script (SIGHUP, `gsmgw try`'s `{"reload":true}`).
    All,
    /// The file of script `name` was saved or created.
    Changed { kind: ScriptKind, name: String },
    /// The file of script `name` was deleted.
    Removed { kind: ScriptKind, name: String },
    /// The library file `path` (in a `lib/` folder) was saved, created or deleted: the
    /// scripts that required it are reloaded.
    Library { path: PathBuf },
}

/// Why the folders cannot be watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The file system watcher could not be created (out of inotify instances, say).
    #[error("cannot start the file watcher: {0}")]
    Start(#[source] notify::Error),
    /// The folder does not exist or cannot be watched.
    #[error("cannot watch {}: {source}", dir.display())]
    Watch {
        dir: PathBuf,
        #[source]
        source: notify::Error,
    },
}

/// Watches the script folders while it lives.
pub struct ScriptWatcher {
    // Dropping the watcher closes the channel, which ends the debounce task.
    _watcher: notify::RecommendedWatcher,
    task: JoinHandle<()>,
}

impl Drop for ScriptWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ScriptWatcher {
    /// Watches every plugin folder (each of `lua.plugin_path`, or `lua.plugins_dir`) and
    /// `lua.rules_dir`, and calls `on_reload` for each script file that changed, [`DEBOUNCE`]
    /// after the last change. Missing folders are skipped (a packaged install may have no
    /// `/etc/gsmgw/plugins`, a gateway no rules); it is an error only when no plugin folder
    /// exists.
    ///
    /// Must be called inside a tokio runtime.
    pub fn start(
        lua: &LuaConfig,
        on_reload: impl Fn(Reload) + Send + 'static,
    ) -> Result<ScriptWatcher, WatchError> {
        Self::with_debounce(lua, DEBOUNCE, on_reload)
    }

    /// [`ScriptWatcher::start`] with another debounce period.
    pub fn with_debounce(
        lua: &LuaConfig,
        debounce: Duration,
        on_reload: impl Fn(Reload) + Send + 'static,
    ) -> Result<ScriptWatcher, WatchError> {
        let configured = if lua.plugin_path.is_empty() {
            std::slice::from_ref(&lua.plugins_dir)
        } else {
            lua.plugin_path.as_slice()
        };
        let mut plugins = Vec::new();
        let mut first_missing = None;
        for dir in configured {
            match canonical(dir) {
                Ok(dir) => plugins.push(dir),
                Err(e) => {
                    tracing::info!(error = %e, "plugin folder not watched");
                    first_missing.get_or_insert(e);
                }
            }
        }
        if plugins.is_empty() {
            if let Some(e) = first_missing {
                return Err(e);
            }
        }
        let rules = match canonical(&lua.rules_dir) {
            Ok(dir) => Some(dir),
            Err(e) => {
                tracing::info!(error = %e, "rules folder not watched");
                None
            }
        };
        let libs: Vec<PathBuf> = plugins
            .iter()
            .chain(rules.as_ref())
            .map(|d| d.join("lib"))
            .filter(|d| d.is_dir())
            .collect();
        let dirs = Folders {
            plugins,
            rules,
            libs,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let classify = dirs.clone();
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
                Ok(event) if is_change(&event.kind) => {
                    for path in &event.paths {
                        if let Some(touched) = classify.script(path) {
                            let _ = tx.send(touched);
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "file watcher error"),
            })
            .map_err(WatchError::Start)?;
        for dir in dirs
            .plugins
            .iter()
            .chain(dirs.rules.as_ref())
            .chain(&dirs.libs)
        {
            watcher
                .watch(dir, RecursiveMode::NonRecursive)
                .map_err(|source| WatchError::Watch {
                    dir: dir.clone(),
                    source,
                })?;
            tracing::info!(dir = %dir.display(), "watching for script changes");
        }
        let task = tokio::spawn(debounce_loop(rx, debounce, dirs, on_reload));
        Ok(ScriptWatcher {
            _watcher: watcher,
            task,
        })
    }
}

fn canonical(dir: &Path) -> Result<PathBuf, WatchError> {
    dir.canonicalize().map_err(|e| WatchError::Watch {
        dir: dir.to_path_buf(),
        source: notify::Error::io(e),
    })
}

/// Opening or reading a file (the host reading a script) is no change.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Any | EventKind::Other => false,
    }
}

/// A script file that was touched: which script (`None` for a library), and where its file
/// is.
type Touched = (Option<ScriptKind>, String, PathBuf);

#[derive(Clone)]
struct Folders {
    /// In search order.
    plugins: Vec<PathBuf>,
    rules: Option<PathBuf>,
    /// The `lib/` folders of both that exist.
    libs: Vec<PathBuf>,
}

impl Folders {
    /// The script `path` belongs to, if it is a `*.lua` file right in one of the folders
    /// (editors' temporary and backup files are not).
    fn script(&self, path: &Path) -> Option<Touched> {
        if path.extension().and_then(|e| e.to_str()) != Some("lua") {
            return None;
        }
        let name = path.file_stem()?.to_str()?.to_string();
        let dir = path.parent()?;
        // Plugins first: when both settings name one folder, its files are plugins.
        let kind = if self.plugins.iter().any(|p| p == dir) {
            Some(ScriptKind::Plugin)
        } else if self.rules.as_deref() == Some(dir) {
            Some(ScriptKind::Rule)
        } else if self.libs.iter().any(|l| l == dir) {
            None
        } else {
            return None;
        };
        Some((kind, name, path.to_path_buf()))
    }

    /// Whether script `name` still has a file: a plugin in any plugin folder, a rule at
    /// `path`.
    fn has(&self, kind: ScriptKind, name: &str, path: &Path) -> bool {
        match kind {
            ScriptKind::Plugin => self
                .plugins
                .iter()
                .any(|dir| dir.join(format!("{name}.lua")).is_file()),
            ScriptKind::Rule => path.is_file(),
        }
    }
}

async fn debounce_loop(
    mut rx: mpsc::UnboundedReceiver<Touched>,
    debounce: Duration,
    folders: Folders,
    on_reload: impl Fn(Reload),
) {
    while let Some(first) = rx.recv().await {
        // Keyed by the folder's name (`plugins`, `rules`; a library by its path) and the
        // script's.
        let mut touched: BTreeMap<(String, String), (Option<ScriptKind>, PathBuf)> =
            BTreeMap::new();
        let key = |kind: Option<ScriptKind>, name: String, path: &Path| match kind {
            Some(kind) => (kind.topic().to_string(), name),
            None => ("lib".to_string(), path.display().to_string()),
        };
        let (kind, name, path) = first;
        touched.insert(key(kind, name, &path), (kind, path));
        let mut open = true;
        while open {
            match tokio::time::timeout(debounce, rx.recv()).await {
                Ok(Some((kind, name, path))) => {
                    touched.insert(key(kind, name, &path), (kind, path));
                }
                Ok(None) => open = false,
                Err(_) => break,
            }
        }
        for ((_, name), (kind, path)) in touched {
            let Some(kind) = kind else {
                tracing::debug!(path = %path.display(), "library file changed");
                on_reload(Reload::Library { path });
                continue;
            };
            // What is there once things are quiet decides: an atomic replace is a change.
            let reload = if folders.has(kind, &name, &path) {
                Reload::Changed { kind, name }
            } else {
                Reload::Removed { kind, name }
            };
            tracing::debug!(?reload, "script file changed");
            on_reload(reload);
        }
        if !open {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folders() -> Folders {
        Folders {
            plugins: vec![PathBuf::from("/srv/plugins"), PathBuf::from("/usr/plugins")],
            rules: Some(PathBuf::from("/srv/rules")),
            libs: vec![PathBuf::from("/srv/plugins/lib")],
        }
    }

    #[test]
    fn lua_files_in_the_folders_are_scripts_and_editor_files_are_not() {
        let f = folders();
        assert_eq!(
            f.script(Path::new("/srv/plugins/rtu.lua")),
            Some((
                Some(ScriptKind::Plugin),
                "rtu".into(),
                PathBuf::from("/srv/plugins/rtu.lua")
            ))
        );
        assert_eq!(
            f.script(Path::new("/srv/rules/night.lua")).map(|t| t.0),
            Some(Some(ScriptKind::Rule))
        );
        assert_eq!(
            f.script(Path::new("/srv/plugins/lib/words.lua"))
                .map(|t| t.0),
            Some(None)
        );
        assert_eq!(f.script(Path::new("/srv/plugins/lib/.words.lua.swp")), None);
        assert_eq!(f.script(Path::new("/srv/rules/lib/words.lua")), None);
        assert_eq!(f.script(Path::new("/srv/plugins/.rtu.lua.swp")), None);
        assert_eq!(f.script(Path::new("/srv/plugins/rtu.lua~")), None);
        assert_eq!(f.script(Path::new("/srv/plugins/4913")), None);
        assert_eq!(f.script(Path::new("/srv/other/rtu.lua")), None);
        assert_eq!(
            f.script(Path::new("/usr/plugins/rtu.lua")).map(|t| t.0),
            Some(Some(ScriptKind::Plugin))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_changes_to_one_file_is_one_reload() {
        let (tx, rx) = mpsc::unbounded_channel();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = seen.clone();
        let task = tokio::spawn(debounce_loop(rx, DEBOUNCE, folders(), move |r| {
            sink.lock().unwrap_or_else(|e| e.into_inner()).push(r)
        }));
        let dir = std::env::temp_dir();
        let gone = dir.join("gsmgw-watch-test-surely-missing.lua");
        for _ in 0..5 {
            assert!(tx
                .send((Some(ScriptKind::Plugin), "x".into(), gone.clone()))
                .is_ok());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(tx);
        assert!(task.await.is_ok());
        let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert_eq!(
            seen,
            vec![Reload::Removed {
                kind: ScriptKind::Plugin,
                name: "x".into()
            }]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_saved_library_is_one_library_reload_however_many_events() {
        let (tx, rx) = mpsc::unbounded_channel();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = seen.clone();
        let task = tokio::spawn(debounce_loop(rx, DEBOUNCE, folders(), move |r| {
            sink.lock().unwrap_or_else(|e| e.into_inner()).push(r)
        }));
        let lib = PathBuf::from("/srv/plugins/lib/words.lua");
        for _ in 0..3 {
            assert!(tx.send((None, "words".into(), lib.clone())).is_ok());
            assert!(tx
                .send((
                    Some(ScriptKind::Plugin),
                    "words".into(),
                    PathBuf::from("/nope/words.lua")
                ))
                .is_ok());
        }
        drop(tx);
        assert!(task.await.is_ok());
        let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(seen.contains(&Reload::Library { path: lib }));
    }

    /// The next reload the watcher asks for, within a generous bound.
    async fn next(rx: &mut mpsc::UnboundedReceiver<Reload>) -> Option<Reload> {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .ok()
            .flatten()
    }

    #[tokio::test]
    async fn every_folder_of_the_plugin_path_is_watched_and_a_removed_override_falls_back() {
        let root = tempfile::tempdir().expect("temp dir");
        let (local, stock) = (root.path().join("etc"), root.path().join("share"));
        std::fs::create_dir_all(&local).expect("mkdir");
        std::fs::create_dir_all(&stock).expect("mkdir");
        let lua = LuaConfig {
            // A missing folder on the path is skipped, not fatal.
            plugin_path: vec![local.clone(), root.path().join("missing"), stock.clone()],
            rules_dir: root.path().join("rules"),
            ..Default::default()
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _watcher = ScriptWatcher::with_debounce(&lua, Duration::from_millis(50), move |r| {
            let _ = tx.send(r);
        })
        .expect("watching");
        let changed = Some(Reload::Changed {
            kind: ScriptKind::Plugin,
            name: "rtu".into(),
        });

        std::fs::write(stock.join("rtu.lua"), "-- stock").expect("write");
        assert_eq!(next(&mut rx).await, changed, "the second folder is watched");
        std::fs::write(local.join("rtu.lua"), "-- override").expect("write");
        assert_eq!(next(&mut rx).await, changed, "the first folder is watched");
        std::fs::remove_file(local.join("rtu.lua")).expect("rm");
        assert_eq!(
            next(&mut rx).await,
            changed,
            "the stock copy takes over again"
        );
        std::fs::remove_file(stock.join("rtu.lua")).expect("rm");
        assert_eq!(
            next(&mut rx).await,
            Some(Reload::Removed {
                kind: ScriptKind::Plugin,
                name: "rtu".into()
            })
        );
    }

    #[test]
    fn no_existing_plugin_folder_is_an_error() {
        let root = tempfile::tempdir().expect("temp dir");
        let lua = LuaConfig {
            plugin_path: vec![root.path().join("a"), root.path().join("b")],
            ..Default::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let started = rt.block_on(async { ScriptWatcher::start(&lua, |_| {}).map(|_| ()) });
        assert!(matches!(started, Err(WatchError::Watch { .. })));
    }
}

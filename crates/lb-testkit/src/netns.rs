//! Network namespace guards.
//!
//! A [`NetNs`] is a named namespace (`ip netns add`) that is deleted, together
//! with every process still living in it, when the guard is dropped.
//! Commands run inside it through `nsenter --net=PATH`; Rust code runs inside
//! it by switching the *calling thread* with [`NetNs::enter`] /
//! [`NetNs::run_in`] or on a dedicated thread with [`NetNs::spawn_thread`].

use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::thread::JoinHandle;

use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use thiserror::Error;

/// Directory where `ip netns` keeps its namespace bind mounts.
pub const NETNS_RUN_DIR: &str = "/var/run/netns";

/// Serialises `ip netns add/del` inside this process (the first `add` also
/// sets up the shared `/run/netns` mount, which must not race).
static NETNS_LOCK: Mutex<()> = Mutex::new(());

/// Errors of the namespace, veth and topology fixtures.
#[derive(Debug, Error)]
pub enum NetnsError {
    /// A command could not be started at all.
    #[error("failed to start `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A command ran but exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// A command's output could not be understood.
    #[error("unexpected output from `{command}`: {output:?}")]
    Parse {
        /// The command line.
        command: String,
        /// The output that failed to parse.
        output: String,
    },
    /// `setns(2)` failed.
    #[error("setns into network namespace {ns}: {source}")]
    Setns {
        /// Namespace name or path.
        ns: String,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// Some other I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// No free namespace name was found.
    #[error("no free namespace name after {0} attempts")]
    NameExhausted(u32),
    /// A caller-supplied argument was rejected.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// A thread started with [`NetNs::spawn_thread`] panicked.
    #[error("namespace thread panicked: {0}")]
    ThreadPanicked(String),
}

impl NetnsError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        NetnsError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Runs `cmd`, returning its stdout on success and a descriptive error otherwise.
pub(crate) fn run_checked(cmd: &mut Command) -> Result<String, NetnsError> {
    let command = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| NetnsError::Spawn {
            command: command.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NetnsError::Command {
            command,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// A uniquely named network namespace, deleted on drop.
///
/// Its name is `lbt-<label>-<pid>-<counter>`; only `lo` exists (and is up)
/// after creation. Dropping the guard SIGKILLs every process left in the
/// namespace (except this process itself) and runs `ip netns del`.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    path: PathBuf,
}

impl NetNs {
    /// Creates a namespace named `lbt-<pid>-<counter>`.
    pub fn new() -> Result<Self, NetnsError> {
        Self::with_label("")
    }

    /// Creates a namespace named `lbt-<label>-<pid>-<counter>`; `label` may
    /// contain ASCII alphanumerics, `-` and `_`.
    pub fn with_label(label: &str) -> Result<Self, NetnsError> {
        if !crate::valid_label(label) {
            return Err(NetnsError::Invalid(format!("namespace label {label:?}")));
        }
        const ATTEMPTS: u32 = 32;
        let mut created = None;
        {
            let _lock = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            for _ in 0..ATTEMPTS {
                let name = crate::resource_name(label);
                match run_checked(Command::new("ip").args(["netns", "add", &name])) {
                    Ok(_) => {
                        created = Some(name);
                        break;
                    }
                    // A leftover of an earlier process with the same pid.
                    Err(NetnsError::Command { stderr, .. }) if stderr.contains("exists") => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let name = created.ok_or(NetnsError::NameExhausted(ATTEMPTS))?;
        let ns = NetNs {
            path: Path::new(NETNS_RUN_DIR).join(&name),
            name,
        };
        // From here on `ns` is dropped (and deleted) on any error.
        ns.ip(&["link", "set", "dev", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace name as known to `ip netns`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace file, `/var/run/netns/NAME`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A `Command` that runs `program` inside the namespace via
    /// `nsenter --net=PATH -- program`. Add arguments and spawn it as usual.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path.display()))
            .arg("--")
            .arg(program);
        cmd
    }

    /// Runs `args[0]` with `args[1..]` inside the namespace and collects its
    /// output (the exit status is *not* checked; see [`NetNs::exec_ok`]).
    pub fn exec(&self, args: &[&str]) -> io::Result<Output> {
        let (program, rest) = args
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
        self.command(program)
            .args(rest)
            .stdin(Stdio::null())
            .output()
    }

    /// Like [`NetNs::exec`] but fails unless the command exits with 0;
    /// returns its stdout.
    pub fn exec_ok(&self, args: &[&str]) -> Result<String, NetnsError> {
        let (program, rest) = args
            .split_first()
            .ok_or_else(|| NetnsError::Invalid("empty command".into()))?;
        run_checked(self.command(program).args(rest))
    }

    /// Runs `ip -n NAME <args>` and returns its stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String, NetnsError> {
        run_checked(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// Starts `args` in the background inside the namespace (stdin and
    /// stdout are null, stderr is inherited). The returned guard kills it on
    /// drop; dropping the namespace kills it too.
    pub fn spawn(&self, args: &[&str]) -> io::Result<ChildGuard> {
        let (program, rest) = args
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
        let child = self
            .command(program)
            .args(rest)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        Ok(ChildGuard::new(child))
    }

    /// Moves the *calling thread* into this namespace until the returned
    /// guard is dropped. Sockets created meanwhile stay in this namespace
    /// for their whole life. The guard cannot leave the thread.
    pub fn enter(&self) -> Result<NsGuard<'_>, NetnsError> {
        let original = File::open("/proc/thread-self/ns/net")
            .map_err(|e| NetnsError::io("open /proc/thread-self/ns/net", e))?;
        let target = self.open()?;
        setns(&target, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Setns {
            ns: self.name.clone(),
            source,
        })?;
        Ok(NsGuard {
            original,
            _ns: PhantomData,
            _not_send: PhantomData,
        })
    }

    /// Runs `f` on the calling thread while it is inside this namespace and
    /// restores the original namespace afterwards (also if `f` panics).
    pub fn run_in<F, R>(&self, f: F) -> Result<R, NetnsError>
    where
        F: FnOnce() -> R,
    {
        let _guard = self.enter()?;
        Ok(f())
    }

    /// Runs `f` on a new thread that lives entirely inside this namespace
    /// (handy for servers: bind, then loop). Join it with [`NsThread::join`].
    pub fn spawn_thread<F, R>(&self, f: F) -> Result<NsThread<R>, NetnsError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let target = self.open()?;
        let ns = self.name.clone();
        let handle = std::thread::Builder::new()
            .name(format!("netns-{}", self.name))
            .spawn(move || {
                setns(&target, CloneFlags::CLONE_NEWNET)
                    .map_err(|source| NetnsError::Setns { ns, source })?;
                drop(target);
                Ok(f())
            })
            .map_err(|e| NetnsError::io("spawn namespace thread", e))?;
        Ok(NsThread { handle })
    }

    /// Pids of the processes currently in the namespace (`ip netns pids`).
    pub fn pids(&self) -> Result<Vec<u32>, NetnsError> {
        let cmd = format!("ip netns pids {}", self.name);
        let out = run_checked(Command::new("ip").args(["netns", "pids", &self.name]))?;
        out.split_whitespace()
            .map(|p| {
                p.parse().map_err(|_| NetnsError::Parse {
                    command: cmd.clone(),
                    output: out.clone(),
                })
            })
            .collect()
    }

    /// SIGKILLs every process in the namespace except this process; returns
    /// how many were signalled.
    pub fn kill_all(&self) -> Result<usize, NetnsError> {
        kill_all_in(&self.name)
    }

    fn open(&self) -> Result<File, NetnsError> {
        File::open(&self.path)
            .map_err(|e| NetnsError::io(format!("open {}", self.path.display()), e))
    }
}

/// SIGKILLs the processes of namespace `name` (never this process).
pub(crate) fn kill_all_in(name: &str) -> Result<usize, NetnsError> {
    let out = run_checked(Command::new("ip").args(["netns", "pids", name]))?;
    let me = std::process::id();
    let mut n = 0;
    for pid in out.split_whitespace().filter_map(|p| p.parse::<u32>().ok()) {
        if pid == me {
            continue;
        }
        let Ok(raw) = i32::try_from(pid) else {
            continue;
        };
        if kill(Pid::from_raw(raw), Signal::SIGKILL).is_ok() {
            n += 1;
        }
    }
    Ok(n)
}

/// Deletes namespace `name` (`ip netns del`), serialised with creation.
pub(crate) fn delete_netns(name: &str) -> Result<(), NetnsError> {
    let _lock = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    run_checked(Command::new("ip").args(["netns", "del", name])).map(|_| ())
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(e) = self.kill_all() {
            eprintln!("lb-testkit: killing processes in netns {}: {e}", self.name);
        }
        if let Err(e) = delete_netns(&self.name) {
            eprintln!("lb-testkit: deleting netns {}: {e}", self.name);
        }
    }
}

/// Keeps the calling thread inside a namespace; restores the thread's
/// original network namespace on drop. Created by [`NetNs::enter`].
#[derive(Debug)]
pub struct NsGuard<'a> {
    original: File,
    _ns: PhantomData<&'a NetNs>,
    /// `setns` is per thread: the guard must be dropped on the same thread.
    _not_send: PhantomData<*const ()>,
}

impl Drop for NsGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = setns(&self.original, CloneFlags::CLONE_NEWNET) {
            eprintln!("lb-testkit: FAILED to restore the thread's network namespace: {e}");
        }
    }
}

/// A background process that is SIGKILLed and reaped on drop.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
}

impl ChildGuard {
    /// Takes ownership of an already spawned child.
    pub fn new(child: Child) -> Self {
        ChildGuard { child }
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Mutable access to the underlying [`Child`] (to poll or take pipes).
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Kills the child now and returns its exit status.
    pub fn kill(mut self) -> io::Result<ExitStatus> {
        // Killing an already exited (but unreaped) child is not an error.
        let _ = self.child.kill();
        self.child.wait()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A thread running inside a namespace, from [`NetNs::spawn_thread`].
#[derive(Debug)]
pub struct NsThread<R> {
    handle: JoinHandle<Result<R, NetnsError>>,
}

impl<R> NsThread<R> {
    /// Waits for the thread; a panic in it becomes [`NetnsError::ThreadPanicked`].
    pub fn join(self) -> Result<R, NetnsError> {
        match self.handle.join() {
            Ok(r) => r,
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "<non-string panic payload>".to_owned());
                Err(NetnsError::ThreadPanicked(msg))
            }
        }
    }

    /// True once the thread has finished.
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }
}

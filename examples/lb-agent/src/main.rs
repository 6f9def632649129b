//! `lb-agent`: the bundled node agent. It reads standard Kubernetes Service,
//! EndpointSlice and Pod objects from a manifest directory and programs the
//! eBPF dataplane of lb-ebpf (or the userspace one of lb-userspace), keeping
//! it in sync as the files change.
//!
//! Subcommands: `run` (the agent), `service list` and `status` (queries over
//! the agent's unix socket), `cleanup` (detach and unpin), `demo` (a
//! throw-away topology in network namespaces) and `plan` (a dry run).

mod answers;
mod api;
mod cli;
mod demo;
mod dsr_backend;
mod http;
mod kube_source;
mod map_sizes;
mod metrics;
mod run;
mod service_list;
mod state;
mod status;
mod userspace;
mod watch;

use std::process::ExitCode;

use clap::Parser;
use lb_agent::{manifests, sources};
use lb_core::{MemoryDataplane, Reconciler};

use cli::{Cli, Command, Output, ServiceCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Service {
            command: ServiceCommand::List(a),
        } => service_list_cmd(&a),
        Command::Status(a) => status_cmd(&a),
        Command::Cleanup(a) => cleanup_cmd(&a),
        Command::Demo(a) => demo::demo(&a),
        Command::Plan(a) => plan(&a),
        Command::DsrBackend(a) => dsr_backend::run(&a),
        Command::HttpGet { addr } => {
            http::get_here(addr, std::time::Duration::from_secs(2)).map(|body| println!("{body}"))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lb-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LB_AGENT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

fn ask(state_dir: &std::path::Path, req: api::Request) -> Result<api::Response, String> {
    match api::query(state_dir, &req).map_err(|e| e.to_string())? {
        api::Response::Error(e) => Err(format!("the agent says: {e}")),
        r => Ok(r),
    }
}

fn service_list_cmd(a: &cli::ListArgs) -> Result<(), String> {
    let api::Response::ServiceList(rows) = ask(&a.state_dir, api::Request::ServiceList)? else {
        return Err("unexpected answer".into());
    };
    match a.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        ),
        Output::Text => print!("{}", service_list::render(&rows)),
    }
    Ok(())
}

fn status_cmd(a: &cli::StatusArgs) -> Result<(), String> {
    let api::Response::Status(s) = ask(&a.state_dir, api::Request::Status)? else {
        return Err("unexpected answer".into());
    };
    match a.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default()),
        Output::Text => print!("{}", status::render(&s, a.verbose)),
    }
    Ok(())
}

fn cleanup_cmd(a: &cli::CleanupArgs) -> Result<(), String> {
    state::check_private_dir(&a.state_dir).map_err(|e| e.to_string())?;
    state::check_private_dir(&a.bpffs).map_err(|e| e.to_string())?;
    if !state::is_root() {
        return Err("lb-agent cleanup needs root to detach BPF programs".into());
    }
    lb_ebpf::cleanup(&a.bpffs).map_err(|e| format!("cleanup {}: {e}", a.bpffs.display()))?;
    state::remove_state(&a.state_dir).map_err(|e| e.to_string())?;
    eprintln!(
        "lb-agent: nothing left under {} and {}",
        a.bpffs.display(),
        a.state_dir.display()
    );
    Ok(())
}

fn plan(a: &cli::PlanArgs) -> Result<(), String> {
    let node = a.node.node_config()?;
    let loaded = manifests::load_dir(&a.manifests).map_err(|e| e.to_string())?;
    if a.verbose {
        for o in &loaded.objects {
            eprintln!("read {} from {}", o.object.describe(), o.path.display());
        }
        for (kind, path) in &loaded.ignored {
            eprintln!("ignored {kind} in {}", path.display());
        }
    }
    let mut sources = sources::Sources::new(&a.manifests, node);
    let pass = sources.pass()?;
    for p in &pass.problems {
        eprintln!("{p}");
    }
    let mut dp = MemoryDataplane::new();
    Reconciler::new()
        .apply(&mut dp, &pass.desired)
        .map_err(|e| e.to_string())?;
    let rows = service_list::rows(dp.tables());
    match a.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        ),
        Output::Text => {
            if a.ops {
                for op in dp.log() {
                    println!("{op}");
                }
                println!();
            }
            print!("{}", service_list::render(&rows));
        }
    }
    Ok(())
}

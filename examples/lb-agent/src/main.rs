//! `lb-agent`: the bundled node agent. It reads standard Kubernetes Service,
//! EndpointSlice and Pod objects and programs an lb dataplane.
//!
//! Implemented so far: `plan`, which reads a manifest directory and shows
//! what would be programmed, using lb-core's in-memory dataplane. `run`,
//! `service list`, `status`, `cleanup` and `demo` come with the agent issue.

mod manifests;
mod service_list;
mod translate;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use lb_core::{DesiredState, LbAlgorithm, MaglevConfig, MemoryDataplane, NodeConfig, Reconciler};

#[derive(Parser)]
#[command(
    name = "lb-agent",
    version,
    about = "An embeddable kube-proxy replacement's node agent"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Read manifests and print the services and dataplane operations that
    /// would be programmed, without touching the system.
    Plan {
        /// Directory of Service / EndpointSlice / Pod manifests.
        #[arg(long)]
        manifests: PathBuf,
        /// This node's addresses (NodePort and HostPort frontends), comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        node_ip: Vec<IpAddr>,
        /// This node's name (traffic policy Local, HostPort pods).
        #[arg(long, default_value = "node-1")]
        node_name: String,
        /// Backend selection algorithm.
        #[arg(long, default_value = "random")]
        backend_selection: LbAlgorithm,
        /// Maglev table size (a prime Cilium accepts).
        #[arg(long, default_value_t = 16381)]
        maglev_table_size: u32,
        /// NodePort range, `FIRST-LAST`.
        #[arg(long, default_value = "30000-32767", value_parser = parse_range)]
        nodeport_range: (u16, u16),
        /// Print the dataplane operations too.
        #[arg(long)]
        ops: bool,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
        /// Say which objects were read from which file.
        #[arg(short, long)]
        verbose: bool,
    },
}

fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?}: expected FIRST-LAST"))?;
    let a: u16 = a.parse().map_err(|_| format!("{a:?} is not a port"))?;
    let b: u16 = b.parse().map_err(|_| format!("{b:?} is not a port"))?;
    if a == 0 || a > b {
        return Err(format!("{s:?} is not a valid range"));
    }
    Ok((a, b))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Plan {
            manifests,
            node_ip,
            node_name,
            backend_selection,
            maglev_table_size,
            nodeport_range,
            ops,
            output,
            verbose,
        } => {
            let mut node = NodeConfig::new(node_name, node_ip);
            node.algorithm = backend_selection;
            node.nodeport_range = nodeport_range.0..=nodeport_range.1;
            node.maglev = match MaglevConfig::new(maglev_table_size, 0) {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("lb-agent: {e}");
                    return ExitCode::from(2);
                }
            };
            match plan(&manifests, &node, ops, output, verbose) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("lb-agent: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn plan(
    dir: &std::path::Path,
    node: &NodeConfig,
    show_ops: bool,
    output: Output,
    verbose: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let loaded = manifests::load_dir(dir)?;
    if verbose {
        for o in &loaded.objects {
            eprintln!("read {} from {}", o.object.describe(), o.path.display());
        }
        for (kind, path) in &loaded.ignored {
            eprintln!("ignored {kind} in {}", path.display());
        }
    }
    for e in &loaded.errors {
        eprintln!("skipped: {e}");
    }
    let (mut svcs, mut slices, mut pods) = (vec![], vec![], vec![]);
    for o in &loaded.objects {
        match &o.object {
            manifests::Object::Service(s) => svcs.push(s.as_ref()),
            manifests::Object::EndpointSlice(s) => slices.push(s.as_ref()),
            manifests::Object::Pod(p) => pods.push(p.as_ref()),
        }
    }
    let t = translate::translate(&svcs, &slices, &pods, &node.node_name);
    for s in &t.skipped {
        eprintln!("skipped: {s}");
    }
    let desired = DesiredState::build(node, &t.services)?;
    let mut dp = MemoryDataplane::new();
    Reconciler::new().apply(&mut dp, &desired)?;
    let rows = service_list::rows(dp.tables());
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Output::Text => {
            if show_ops {
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

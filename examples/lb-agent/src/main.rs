//! `lb-agent`: the bundled node agent (issue 6). Not implemented yet.

fn main() {
    eprintln!("lb-agent is not implemented yet (see issue 6)");
    std::process::exit(2);
}

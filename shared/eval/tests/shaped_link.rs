//! The real constrained link's shaping, measured: a bulk transfer into a namespace shaped to
//! 800 kbit/s takes about bits / rate. Needs root (network namespaces); without it the test says
//! so and checks that the harness reports the link as unavailable rather than failing.

use hlm_eval::shaped_link::{wait_for, Namespace, ShapedLinkError};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

#[test]
fn tbf_shapes_a_bulk_transfer_to_the_configured_rate() {
    let rate = 800_000.0;
    let ns = match Namespace::create(1, rate) {
        Ok(ns) => ns,
        Err(ShapedLinkError::Unavailable(why)) if !is_root() => {
            eprintln!("SKIPPED (not root): {why}");
            return;
        }
        Err(e) => panic!("as root the namespace must be made: {e}"),
    };
    // A sink in the namespace: for each connection, reads everything and answers with the count.
    let sink = format!(
        "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
         s.bind(('{}',9001))\ns.listen(4)\nwhile True:\n c,_=s.accept()\n n=0\n while True:\n  \
         b=c.recv(65536)\n  if not b: break\n  n+=len(b)\n c.sendall(str(n).encode())\n c.close()\n",
        ns.ns_ip
    );
    let mut child = ns.command("python3").args(["-c", &sink]).spawn().unwrap();
    let addr = format!("{}:9001", ns.ns_ip).parse().unwrap();
    wait_for(addr, &mut child, Duration::from_secs(20)).unwrap();
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    let bytes = 200_000usize;
    let t = Instant::now();
    c.write_all(&vec![7u8; bytes]).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = String::new();
    c.read_to_string(&mut reply).unwrap();
    let secs = t.elapsed().as_secs_f64();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(reply, bytes.to_string());
    let ideal = bytes as f64 * 8.0 / rate; // 2.0 s; TCP/IP headers add a few per cent
    assert!(
        secs > 0.9 * ideal && secs < 1.5 * ideal,
        "{bytes} bytes at {rate} bit/s took {secs:.2} s (ideal {ideal:.2} s)"
    );
    eprintln!("{bytes} bytes through the shaped veth in {secs:.2} s (ideal {ideal:.2} s)");
}

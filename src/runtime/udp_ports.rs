//! UDP ports for browser calls' sockets: `[webrtc] udp_port_min ..=
//! udp_port_max`, so a firewall can open one known range.
//!
//! The `webrtc` crate binds the addresses it is given; it has no port range
//! of its own. So each call leases a port here before its peer is built:
//! every configured address whose port is 0 gets the leased port, and the
//! lease is released when the call's transport drops. A port is only leased
//! after binding it on every address succeeded (then the probe sockets close
//! and the peer binds them again), so ports other processes hold are skipped.
//!
//! Invariants: no two live calls hold the same port; a full range refuses
//! the offer (`None`), it never reuses a port; without a range the addresses
//! pass through unchanged (port 0: the OS picks one per call).

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};

/// The configured range and the ports live calls hold.
#[derive(Debug)]
pub struct UdpPorts {
    range: Option<(u16, u16)>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    held: BTreeSet<u16>,
    /// Where the next search starts (ports are handed out round-robin, so a
    /// port just released is not reused at once by the next call).
    next: u16,
}

/// A leased port, released on drop.
#[derive(Debug)]
pub struct PortLease {
    ports: Arc<UdpPorts>,
    port: u16,
}

impl PortLease {
    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        self.ports.state.lock().expect("udp ports").held.remove(&self.port);
    }
}

impl UdpPorts {
    /// Ports `min..=max`; `(0, 0)`: any port.
    pub fn new(min: u16, max: u16) -> Arc<Self> {
        let range = (min != 0 && max >= min).then_some((min, max));
        Arc::new(Self { range, state: Mutex::new(State { next: min, ..State::default() }) })
    }

    /// Ports held by live calls.
    pub fn held(&self) -> usize {
        self.state.lock().expect("udp ports").held.len()
    }

    /// The addresses a new call binds, and its lease (none without a range).
    /// `None`: every port of the range is taken.
    pub fn lease(self: &Arc<Self>, addrs: &[String]) -> Option<(Vec<String>, Option<PortLease>)> {
        let Some((min, max)) = self.range else {
            return Some((addrs.to_vec(), None));
        };
        let mut st = self.state.lock().expect("udp ports");
        let span = u32::from(max - min) + 1;
        let first = st.next.clamp(min, max);
        for i in 0..span {
            let port = (u32::from(first - min) + i) % span + u32::from(min);
            let port = port as u16;
            if st.held.contains(&port) {
                continue;
            }
            let Some(with_port) = with_port(addrs, port) else { continue };
            // Bind it everywhere first: a port someone else holds is skipped.
            let free = with_port.iter().all(|a| a.parse::<SocketAddr>().is_ok_and(|a| UdpSocket::bind(a).is_ok()));
            if free {
                st.held.insert(port);
                st.next = if port == max { min } else { port + 1 };
                return Some((with_port, Some(PortLease { ports: self.clone(), port })));
            }
        }
        None
    }
}

/// `addrs` with every port 0 replaced by `port` (an address naming its own
/// port keeps it); `None` if an address does not parse.
fn with_port(addrs: &[String], port: u16) -> Option<Vec<String>> {
    addrs
        .iter()
        .map(|a| {
            let mut sa: SocketAddr = a.parse().ok()?;
            if sa.port() == 0 {
                sa.set_port(port);
            }
            Some(sa.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A free range of `n` ports on loopback (bound and released just now).
    fn free_range(n: u16) -> (u16, u16) {
        for base in (40_000u16..60_000).step_by(97) {
            if (base..base + n).all(|p| UdpSocket::bind(("127.0.0.1", p)).is_ok()) {
                return (base, base + n - 1);
            }
        }
        panic!("no free range");
    }

    #[test]
    fn without_a_range_the_addresses_pass_through() {
        let p = UdpPorts::new(0, 0);
        let (addrs, lease) = p.lease(&["127.0.0.1:0".into()]).unwrap();
        assert_eq!((addrs, lease.is_none()), (vec!["127.0.0.1:0".to_string()], true));
    }

    #[test]
    fn calls_get_distinct_ports_of_the_range_until_it_is_full_and_released_ports_return() {
        let (min, max) = free_range(3);
        let p = UdpPorts::new(min, max);
        let addrs = vec!["127.0.0.1:0".to_string()];
        let a = p.lease(&addrs).unwrap();
        let b = p.lease(&addrs).unwrap();
        let c = p.lease(&addrs).unwrap();
        let ports: BTreeSet<u16> = [&a, &b, &c].iter().map(|l| l.1.as_ref().unwrap().port()).collect();
        assert_eq!(ports, (min..=max).collect(), "three calls, three ports of the range");
        assert_eq!(a.0, vec![format!("127.0.0.1:{}", a.1.as_ref().unwrap().port())]);
        assert!(p.lease(&addrs).is_none(), "a full range refuses");
        let freed = b.1.as_ref().unwrap().port();
        drop(b);
        assert_eq!(p.held(), 2);
        assert_eq!(p.lease(&addrs).unwrap().1.unwrap().port(), freed);
    }

    #[test]
    fn a_port_another_socket_holds_is_skipped() {
        let (min, max) = free_range(2);
        let _squatter = UdpSocket::bind(("127.0.0.1", min)).unwrap();
        let p = UdpPorts::new(min, max);
        let l = p.lease(&["127.0.0.1:0".into()]).unwrap().1.unwrap();
        assert_eq!(l.port(), max);
        assert!(p.lease(&["127.0.0.1:0".into()]).is_none());
    }
}

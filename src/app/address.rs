//! The address other services reach an app at, as Spring Cloud's `InetUtils` finds it.

use std::net::IpAddr;

/// A network interface's address, as the system lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Interface {
    pub(crate) name: String,
    pub(crate) index: u32,
    pub(crate) ip: IpAddr,
}

/// The system's interfaces (none if they cannot be listed).
pub(crate) fn interfaces() -> Vec<Interface> {
    match if_addrs::get_if_addrs() {
        Ok(list) => list
            .into_iter()
            .map(|i| Interface {
                index: i.index.unwrap_or(u32::MAX),
                ip: i.ip(),
                name: i.name,
            })
            .collect(),
        Err(error) => {
            tracing::warn!(%error, "cannot list network interfaces");
            Vec::new()
        }
    }
}

/// What decides the address (Spring's `spring.cloud.inetutils.*`).
#[derive(Clone, Debug, Default)]
pub(crate) struct Choice {
    /// Address prefixes to prefer (`10.0`, `192.168.1.`); the first interface in one wins.
    pub(crate) preferred_networks: Vec<String>,
    /// Interface names to skip (exact, or a prefix ending in `*`: `docker*`, `veth*`).
    pub(crate) ignored_interfaces: Vec<String>,
}

/// The first usable address, in interface order: not loopback, link-local or unspecified,
/// IPv4 before IPv6, an interface not ignored, a preferred network first when any is named.
pub(crate) fn first_non_loopback(interfaces: &[Interface], choice: &Choice) -> Option<IpAddr> {
    let ignored = |name: &str| {
        choice
            .ignored_interfaces
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == pattern,
            })
    };
    let mut usable: Vec<&Interface> = interfaces
        .iter()
        .filter(|i| !i.ip.is_loopback() && !i.ip.is_unspecified() && !ignored(&i.name))
        .filter(|i| match i.ip {
            IpAddr::V4(ip) => !ip.is_link_local(),
            IpAddr::V6(ip) => !ip.is_unicast_link_local(),
        })
        .collect();
    usable.sort_by_key(|i| (i.ip.is_ipv6(), i.index));
    let preferred = usable.iter().find(|i| {
        let ip = i.ip.to_string();
        choice
            .preferred_networks
            .iter()
            .any(|network| ip.starts_with(network.as_str()))
    });
    preferred.or(usable.first()).map(|i| i.ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interface(name: &str, index: u32, ip: &str) -> Interface {
        Interface {
            name: name.into(),
            index,
            ip: ip.parse().unwrap(),
        }
    }

    #[test]
    fn the_first_non_loopback_ipv4_address_in_interface_order() {
        let list = [
            interface("lo", 1, "127.0.0.1"),
            interface("eth1", 3, "10.1.0.5"),
            interface("eth0", 2, "fd00::2"),
            interface("eth0", 2, "169.254.1.1"),
            interface("docker0", 4, "172.17.0.1"),
            interface("eth0", 2, "192.0.2.2"),
        ];
        let none = Choice::default();
        assert_eq!(
            first_non_loopback(&list, &none),
            Some("192.0.2.2".parse().unwrap())
        );
        let preferring = Choice {
            preferred_networks: vec!["172.17".into()],
            ..Choice::default()
        };
        assert_eq!(
            first_non_loopback(&list, &preferring),
            Some("172.17.0.1".parse().unwrap())
        );
        let ignoring = Choice {
            ignored_interfaces: vec!["eth*".into()],
            ..Choice::default()
        };
        assert_eq!(
            first_non_loopback(&list, &ignoring),
            Some("172.17.0.1".parse().unwrap())
        );
        assert_eq!(first_non_loopback(&list[..1], &none), None);
        assert_eq!(
            first_non_loopback(&[interface("eth0", 2, "fd00::2")], &none),
            Some("fd00::2".parse().unwrap())
        );
    }

    #[test]
    fn this_machine_has_a_listing() {
        // Loopback is always there; what else is depends on the machine.
        assert!(interfaces().iter().any(|i| i.ip.is_loopback()));
    }
}

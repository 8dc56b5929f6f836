//! Host paths a workload would mount: `Binds`, `Mounts` of type bind, and
//! volumes whose driver options are a bind (or any mount of a host path)
//! in disguise.

use super::{join, Finding, Kind};
use crate::endpoint::clean;
use crate::gojson::{DecodeError, Obj};

/// A host path as the policy compares it: absolute paths cleaned (`.`,
/// `..`, `//` and a trailing `/` resolved lexically); relative ones as
/// written.
pub fn host_path(p: &str) -> String {
    if p.starts_with('/') {
        clean(p)
    } else {
        p.to_string()
    }
}

fn found(at: &str, path: &str, out: &mut Vec<Finding>) {
    let p = host_path(path);
    out.push(Finding::new(
        Kind::HostPath(p.clone()),
        at,
        format!("host path {p:?}"),
    ));
}

/// `Binds`: `src:dst[:mode]`. The daemon splits on `:` (at most three
/// fields) and binds `src` when it is absolute; a relative `src` is a
/// volume name.
pub fn binds(list: &[String], at: &str, out: &mut Vec<Finding>) {
    for (i, b) in list.iter().enumerate() {
        if let Some((src, _)) = b.split_once(':') {
            if src.starts_with('/') {
                found(&format!("{at}[{i}]"), src, out);
            }
        }
    }
}

/// `Mounts` (container `HostConfig.Mounts`, swarm `ContainerSpec.Mounts`):
/// binds by `Source`, and volume driver options.
pub fn mounts(list: &[Obj], out: &mut Vec<Finding>) -> Result<(), DecodeError> {
    for m in list {
        let kind = m.string("Type")?;
        if kind.eq_ignore_ascii_case("bind") {
            found(&m.field_path("Source"), &m.string("Source")?, out);
        }
        if let Some(vo) = m.ptr_obj("VolumeOptions")? {
            if let Some(dc) = vo.ptr_obj("DriverConfig")? {
                if let Some(opts) = dc.string_map("Options")? {
                    volume_options(&opts, &dc.field_path("Options"), out);
                }
            }
        }
    }
    Ok(())
}

/// Volume driver options (`Mounts[].VolumeOptions.DriverConfig.Options`,
/// `volumes/create` `DriverOpts`). The local driver mounts `device` on the
/// volume with `mount(2)`, `o` being the mount options: with `bind` or
/// `rbind` in `o` the device is a host path (relative ones resolve against
/// the daemon's working directory); an absolute device without them is a
/// block device or a directory, a host path all the same. Options such as
/// overlay's `lowerdir=/etc` name host paths too. Keys are compared without
/// case, since a plugin driver may read them so.
pub fn volume_options(opts: &[(String, String)], at: &str, out: &mut Vec<Finding>) {
    let values = |key: &'static str| {
        opts.iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(k, v)| (join(at, k), v))
    };
    let mut bind = false;
    for (o_at, o) in values("o") {
        for item in o.split(',').map(str::trim) {
            bind |= item.eq_ignore_ascii_case("bind") || item.eq_ignore_ascii_case("rbind");
            if let Some((_, v)) = item.split_once('=') {
                for p in v.split(':').filter(|p| p.starts_with('/')) {
                    found(&o_at, p, out);
                }
            }
        }
    }
    for (d_at, device) in values("device") {
        if bind || device.starts_with('/') {
            found(&d_at, device, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(out: &[Finding]) -> Vec<String> {
        out.iter()
            .map(|f| match &f.kind {
                Kind::HostPath(p) => p.clone(),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn binds_spellings_are_cleaned() {
        let mut out = Vec::new();
        let list: Vec<String> = [
            "/etc/../etc:/x",
            "//etc:/x:ro",
            "/:/host",
            "/var/run/:/r",
            "named:/data",
            "/anon",
            "relative/x:/y",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        binds(&list, "HostConfig.Binds", &mut out);
        assert_eq!(paths(&out), ["/etc", "/etc", "/", "/var/run"]);
        assert_eq!(out[1].at, "HostConfig.Binds[1]");
    }

    #[test]
    fn volume_options_find_binds_devices_and_lowerdirs() {
        let opts = |pairs: &[(&str, &str)]| {
            let mut out = Vec::new();
            let o: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            volume_options(&o, "DriverOpts", &mut out);
            paths(&out)
        };
        assert_eq!(
            opts(&[("type", "none"), ("o", "bind"), ("device", "/etc")]),
            ["/etc"]
        );
        assert_eq!(
            opts(&[("type", "none"), ("o", "ro, rbind"), ("device", "etc")]),
            ["etc"]
        );
        assert_eq!(
            opts(&[("type", "ext4"), ("device", "/dev/sda1")]),
            ["/dev/sda1"]
        );
        assert_eq!(
            opts(&[
                ("type", "overlay"),
                ("o", "lowerdir=/etc:/usr,upperdir=/u,workdir=/w")
            ]),
            ["/etc", "/usr", "/u", "/w"]
        );
        assert!(opts(&[
            ("type", "nfs"),
            ("o", "addr=1.2.3.4"),
            ("device", ":/export")
        ])
        .is_empty());
        assert!(opts(&[("type", "tmpfs"), ("device", "tmpfs"), ("o", "size=1m")]).is_empty());
    }
}

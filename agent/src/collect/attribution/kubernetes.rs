//! Kubernetes pods: a cgroup the kubelet made for a pod is labelled
//! `k8s:<namespace>/<pod>`.
//!
//! The kubelet names pod cgroups by the pod's UID, at the root of each
//! hierarchy:
//!
//! | driver | path |
//! | --- | --- |
//! | cgroupfs | `/kubepods[/burstable\|/besteffort]/pod<uid>[/<container>...]` |
//! | systemd | `/kubepods.slice[/kubepods-<qos>.slice]/kubepods[-<qos>]-pod<uid with _>.slice[/...]` |
//!
//! The UID is turned into the namespace and name through the kubelet's pod
//! log directories, `/var/log/pods/<namespace>_<pod>_<uid>`
//! (`workloads.kubernetes_pod_logs`) (namespaces and
//! pod names are DNS labels and subdomains, so they hold no `_`), which the
//! kubelet makes before the pod's first container starts. A pod whose
//! directory is not found (the folder not mounted into moatd's container, or
//! the pod's own cgroup seen before its sandbox) is labelled `k8s:<uid>`.

use std::path::Path;

/// The UID of the pod whose cgroup `parts` (the path's components from the
/// hierarchy's root) is or is inside, if the kubelet made it.
pub fn pod_uid(parts: &[&str]) -> Option<String> {
    let (first, rest) = parts.split_first()?;
    let uid = match *first {
        "kubepods" => {
            let rest = match rest.first() {
                Some(&"burstable" | &"besteffort") => &rest[1..],
                _ => rest,
            };
            rest.first()?.strip_prefix("pod")?.to_owned()
        }
        "kubepods.slice" => {
            let rest = match rest.first() {
                Some(&"kubepods-burstable.slice" | &"kubepods-besteffort.slice") => &rest[1..],
                _ => rest,
            };
            let pod = rest.first()?.strip_suffix(".slice")?;
            let uid = [
                "kubepods-burstable-pod",
                "kubepods-besteffort-pod",
                "kubepods-pod",
            ]
            .iter()
            .find_map(|prefix| pod.strip_prefix(prefix))?;
            uid.replace('_', "-")
        }
        _ => return None,
    };
    is_uid(&uid).then_some(uid)
}

/// Whether `text` is a pod UID as the kubelet writes it (a UUID: hex digits
/// and dashes), so that nothing else becomes part of a label.
fn is_uid(text: &str) -> bool {
    (8..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// The label of pod `uid`: `k8s:<namespace>/<pod>` from its folder in
/// `pod_logs`, or `k8s:<uid>` when there is none.
pub fn pod_label(uid: &str, pod_logs: &Path) -> String {
    let suffix = format!("_{uid}");
    let found = std::fs::read_dir(pod_logs).ok().and_then(|entries| {
        entries.filter_map(Result::ok).find_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let (namespace, pod) = name.strip_suffix(&suffix)?.split_once('_')?;
            (is_dns_name(namespace) && is_dns_name(pod)).then(|| format!("k8s:{namespace}/{pod}"))
        })
    });
    found.unwrap_or_else(|| format!("k8s:{uid}"))
}

/// Whether `text` could be a namespace or pod name (a DNS subdomain): a folder
/// named otherwise is not the kubelet's, and its name is kept out of labels.
fn is_dns_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "6b9d3c1e-8f2a-4d5b-9c7e-0a1b2c3d4e5f";
    const CID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn uid_of(path: &str) -> Option<String> {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        pod_uid(&parts)
    }

    #[test]
    fn finds_the_pod_uid_with_either_driver_and_every_qos_class() {
        let us = UID.replace('-', "_");
        for path in [
            format!("/kubepods/pod{UID}"),
            format!("/kubepods/pod{UID}/{CID}"),
            format!("/kubepods/burstable/pod{UID}/{CID}"),
            format!("/kubepods/besteffort/pod{UID}/{CID}"),
            format!("/kubepods.slice/kubepods-pod{us}.slice"),
            format!("/kubepods.slice/kubepods-pod{us}.slice/cri-containerd-{CID}.scope"),
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{us}.slice/crio-{CID}.scope"
            ),
            format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{us}.slice/docker-{CID}.scope"
            ),
        ] {
            assert_eq!(uid_of(&path).as_deref(), Some(UID), "{path}");
        }
    }

    #[test]
    fn only_the_kubelet_places_count() {
        for path in [
            "/kubepods".to_owned(),
            "/kubepods/burstable".to_owned(),
            "/kubepods.slice/kubepods-burstable.slice".to_owned(),
            // Not at the root: a pod-like name anyone could make elsewhere.
            format!("/user.slice/kubepods/pod{UID}"),
            format!("/moat/kubepods/pod{UID}"),
            // Not a UID.
            "/kubepods/podX../etc".to_owned(),
            "/kubepods.slice/kubepods-pod..slice".to_owned(),
        ] {
            assert_eq!(uid_of(&path), None, "{path}");
        }
    }

    #[test]
    fn labels_a_pod_by_namespace_and_name_from_its_log_folder() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            format!("kube-system_coredns-5d78c9869d-x2x7q_{UID}"),
            "default_web-0_11111111-2222-3333-4444-555555555555".to_owned(),
            // Not the kubelet's: capitals and a missing name.
            "BAD_pod_aaaaaaaa-0000-0000-0000-000000000000".to_owned(),
            "_pod_bbbbbbbb-0000-0000-0000-000000000000".to_owned(),
        ] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        assert_eq!(
            pod_label(UID, dir.path()),
            "k8s:kube-system/coredns-5d78c9869d-x2x7q"
        );
        assert_eq!(
            pod_label("11111111-2222-3333-4444-555555555555", dir.path()),
            "k8s:default/web-0"
        );
        for unknown in [
            "aaaaaaaa-0000-0000-0000-000000000000",
            "bbbbbbbb-0000-0000-0000-000000000000",
            "cccccccc-0000-0000-0000-000000000000",
        ] {
            assert_eq!(pod_label(unknown, dir.path()), format!("k8s:{unknown}"));
        }
        assert_eq!(
            pod_label(UID, &dir.path().join("missing")),
            format!("k8s:{UID}")
        );
    }
}

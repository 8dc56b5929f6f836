//! Every known way to get a request past a body-reading authorization
//! plugin (see the project's DOCKER-AUTHZ notes), written as the attack.
//! Each body here was checked against dockerd 20.10.24: the daemon accepts
//! it and applies the privilege it asks for.

mod common;

use common::{assert_allowed, assert_denied, recorded, request, set_body};
use moat_policy::{baseline, evaluate, evaluate_wire};

const IMG: &str = r#""Image":"bb","Cmd":["true"]"#;

fn create(body: &str) -> moat_policy::Decision {
    evaluate(
        &baseline(),
        &request("POST", "/v1.41/containers/create", Some(body)),
    )
}

#[test]
fn keys_match_case_insensitively_with_unicode_folding() {
    let d = create(&format!(r#"{{{IMG},"hostconfig":{{"privileged":true}}}}"#));
    assert_denied(&d, "privileged", "HostConfig.Privileged: true");
    let d = create(&format!(
        r#"{{{IMG},"HostConfig":{{"ſecurityOpt":["seccomp=unconfined"]}}}}"#
    ));
    assert_denied(&d, "seccomp-unconfined", "seccomp=unconfined");
    // U+212A KELVIN SIGN folds to k.
    let d = create(&format!(
        r#"{{{IMG},"HostConfig":{{"Networ\u212aMode":"host"}}}}"#
    ));
    assert_denied(&d, "host-namespaces", "NetworkMode: host");
    // A key with an invalid byte is no field at all, for the daemon too.
    let mut r = request("POST", "/containers/create", Some("{}"));
    set_body(
        &mut r,
        b"{\"Image\":\"bb\",\"HostConfig\":{\"Privileged\xff\":true}}",
    );
    assert_allowed(&evaluate(&baseline(), &r));
}

#[test]
fn duplicate_keys_null_and_merged_objects_as_go_decodes_them() {
    for body in [
        r#"{"HostConfig":{"Privileged":false,"Privileged":true}}"#,
        r#"{"HostConfig":{"Privileged":true,"privileged":null}}"#,
        r#"{"HostConfig":{"Privileged":true},"hostconfig":{"CapAdd":null}}"#,
        r#"{"HostConfig":{"Privileged":false},"HOSTCONFIG":{"Privileged":true}}"#,
    ] {
        assert_denied(&create(body), "privileged", "Privileged: true");
    }
    // The last duplicate does win when it is a value.
    assert_allowed(&create(
        r#"{"HostConfig":{"Privileged":true,"privileged":false}}"#,
    ));
    // null resets a pointer: this PidsLimit is unset, not -1.
    assert_allowed(&create(
        r#"{"HostConfig":{"PidsLimit":-1,"pidslimit":null}}"#,
    ));
}

#[test]
fn deprecated_top_level_host_config_fields_are_read() {
    assert_denied(
        &create(&format!(r#"{{{IMG},"Privileged":true}}"#)),
        "privileged",
        "Privileged: true",
    );
    assert_denied(
        &create(&format!(
            r#"{{{IMG},"HostConfig":{{}},"Binds":["/:/host"]}}"#
        )),
        "host-paths",
        "Binds[0]: host path \"/\"",
    );
}

#[test]
fn slice_elements_are_reused_as_go_reuses_them() {
    // A null element leaves the earlier bind in place.
    assert_denied(
        &create(r#"{"HostConfig":{"Binds":["/etc:/x"],"binds":[null]}}"#),
        "host-paths",
        "/etc",
    );
    // The second Mounts array merges into the first one's element.
    assert_denied(
        &create(
            r#"{"HostConfig":{"Mounts":[{"Type":"bind","Source":"/etc","Target":"/b"}],
            "mounts":[{"Target":"/c"}]}}"#,
        ),
        "host-paths",
        "HostConfig.Mounts[0].Source: host path \"/etc\"",
    );
    // An emptied list is empty, not the default.
    assert_denied(
        &create(r#"{"HostConfig":{"MaskedPaths":null,"maskedpaths":[]}}"#),
        "systempaths-unconfined",
        "MaskedPaths",
    );
}

#[test]
fn capability_spellings_the_daemon_normalises() {
    for cap in [
        r#""sys_admin""#,
        r#"["CAP_SYS_ADMIN"]"#,
        r#"["Sys_Admin"]"#,
        r#"["ſys_admin"]"#,
        r#"["chown","all"]"#,
    ] {
        let d = create(&format!(r#"{{"HostConfig":{{"CapAdd":{cap}}}}}"#));
        assert_denied(&d, "capabilities", "adds ");
    }
    assert_allowed(&create(
        r#"{"HostConfig":{"CapAdd":["chown","Kill"],"CapDrop":["ALL"]}}"#,
    ));
}

#[test]
fn a_body_the_plugin_does_not_see_is_denied() {
    let policy = baseline();
    let body = format!(r#"{{{IMG},"HostConfig":{{"Privileged":true}}}}"#);
    let json = |headers: &[(&str, &str)]| {
        let mut r = request("POST", "/v1.41/containers/create", None);
        for (k, v) in headers {
            r.headers.insert(k.to_string(), v.to_string());
        }
        r
    };
    // Chunked: the daemon drops Content-Length and forwards no body.
    let d = evaluate(&policy, &json(&[("Content-Type", "application/json")]));
    assert_denied(&d, "request-body", "chunked");
    assert_denied(&d, "request-body", "CVE-2024-41110");
    let d = evaluate(
        &policy,
        &json(&[
            ("Content-Type", "application/json"),
            ("Content-Length", "0"),
        ]),
    );
    assert_denied(&d, "request-body", "Content-Length is 0");
    let d = evaluate(
        &policy,
        &json(&[("Content-Type", "text/plain"), ("Content-Length", "50")]),
    );
    assert_denied(&d, "request-body", "Content-Type is \"text/plain\"");
    let d = evaluate(
        &policy,
        &json(&[
            ("Content-Type", "application/json"),
            ("Content-Length", "2000000"),
        ]),
    );
    assert_denied(&d, "request-body", "1 MiB or more");
    let mut auth = request("POST", "/v1.41/containers/create?x=/auth", None);
    auth.headers
        .insert("Content-Type".into(), "application/json".into());
    auth.headers
        .insert("Content-Length".into(), body.len().to_string());
    assert_denied(
        &evaluate(&policy, &auth),
        "request-body",
        "ends in \"/auth\"",
    );
    // Every endpoint whose body a rule reads.
    for (method, uri) in [
        ("POST", "/v1.41/containers/c1/exec"),
        ("POST", "/v1.41/containers/c1/update"),
        ("POST", "/v1.41/services/create"),
        ("POST", "/v1.41/services/s1/update?version=2"),
        ("POST", "/v1.41/volumes/create"),
        ("POST", "/v1.23/containers/c1/start"),
    ] {
        let d = evaluate(&policy, &request(method, uri, None));
        assert_denied(&d, "request-body", "needs a request body");
    }
    // A charset parameter is still JSON, and the body is read.
    let mut r = request("POST", "/v1.41/containers/create", Some(&body));
    r.headers.insert(
        "Content-Type".into(),
        "application/json; charset=utf-8".into(),
    );
    assert_denied(&evaluate(&policy, &r), "privileged", "Privileged");
}

#[test]
fn bodies_that_do_not_decode_are_denied() {
    for (body, needle) in [
        ("{", "not JSON"),
        ("[]", "expected an object"),
        (
            r#"{"HostConfig":{"Privileged":"true"}}"#,
            "HostConfig.Privileged: expected a boolean",
        ),
        (
            r#"{"HostConfig":{"PidsLimit":-1.0}}"#,
            "not a 64-bit integer",
        ),
        (r#"{"HostConfig":[]}"#, "HostConfig: expected an object"),
    ] {
        assert_denied(&create(body), "request-body", needle);
    }
    let deep = format!(r#"{{"Labels":{}}}"#, "[".repeat(200) + &"]".repeat(200));
    assert_denied(&create(&deep), "request-body", "nested deeper");
    // json.Decoder reads the first value only; so does the policy.
    assert_denied(
        &create(r#"{"HostConfig":{"Privileged":true}} {"HostConfig":{"Privileged":false}}"#),
        "privileged",
        "Privileged",
    );
}

#[test]
fn path_spellings_reach_the_same_rule() {
    let body = r#"{"HostConfig":{"Privileged":true}}"#;
    for uri in [
        "/v1.41/containers/create",
        "/containers/create",
        "/v1.41/containers%2Fcreate",
        "//containers/create",
        "/containers/create?name=x",
        "/v1.41/./containers/../containers/create",
        "http://docker/v1.41/containers/create",
        "unix:/v1.41/containers/create",
        "/v1.023/containers/create",
    ] {
        let d = evaluate(&baseline(), &request("POST", uri, Some(body)));
        assert_denied(&d, "privileged", "Privileged");
    }
    let d = evaluate(
        &baseline(),
        &request("POST", "/v1.41/containers/a%zz/start", None),
    );
    assert_denied(&d, "request-uri", "percent-encoding");
}

#[test]
fn bind_mount_spellings_of_sensitive_paths() {
    for src in [
        "/etc/../etc",
        "//etc",
        "/etc/",
        "/",
        "/var/run/docker.sock",
        "/run/docker.sock",
        "/var/run",
        "/run",
        "/var",
        "/proc/1/root",
        "/var/lib/docker/volumes",
        "/home/../root",
    ] {
        let d = create(&format!(r#"{{"HostConfig":{{"Binds":["{src}:/x:ro"]}}}}"#));
        assert_denied(&d, "host-paths", "host path");
        let d = create(&format!(
            r#"{{"HostConfig":{{"Mounts":[{{"Type":"bind","Source":"{src}","Target":"/x"}}]}}}}"#
        ));
        assert_denied(&d, "host-paths", "host path");
    }
    for ok in ["/srv/data", "/home/u", "/var/log/app", "/etcd"] {
        assert_allowed(&create(&format!(
            r#"{{"HostConfig":{{"Binds":["{ok}:/x"]}}}}"#
        )));
    }
}

#[test]
fn volumes_that_are_binds_in_disguise() {
    let d = create(
        r#"{"HostConfig":{"Mounts":[{"Type":"volume","Target":"/x","VolumeOptions":
        {"DriverConfig":{"Name":"local","Options":{"type":"none","o":"bind","device":"/etc"}}}}]}}"#,
    );
    assert_denied(&d, "host-paths", "Options.device: host path \"/etc\"");
    let vol = |opts: &str| {
        evaluate(
            &baseline(),
            &request(
                "POST",
                "/v1.41/volumes/create",
                Some(&format!(r#"{{"DriverOpts":{opts}}}"#)),
            ),
        )
    };
    assert_denied(
        &vol(r#"{"type":"none","o":"rbind","device":"/var/run"}"#),
        "host-paths",
        "/var/run",
    );
    assert_denied(
        &vol(r#"{"type":"none","o":"bind","device":"etc"}"#),
        "host-paths",
        "\"etc\"",
    );
    assert_denied(
        &vol(r#"{"type":"ext4","device":"/dev/sda1"}"#),
        "host-paths",
        "/dev/sda1",
    );
    assert_denied(
        &vol(r#"{"type":"overlay","device":"overlay","o":"lowerdir=/etc,upperdir=/u,workdir=/w"}"#),
        "host-paths",
        "/etc",
    );
    assert_allowed(&vol(r#"{"type":"tmpfs","device":"tmpfs","o":"size=10m"}"#));
    assert_allowed(&vol(r#"{"type":"none","o":"bind","device":"/srv/vol"}"#));
}

#[test]
fn start_with_a_host_config_before_api_1_24() {
    let policy = baseline();
    let d = evaluate(
        &policy,
        &request(
            "POST",
            "/v1.23/containers/c1/start",
            Some(r#"{"Privileged":true}"#),
        ),
    );
    assert_denied(&d, "privileged", "Privileged: true");
    let d = evaluate(
        &policy,
        &request(
            "POST",
            "/v1.23/containers/c1/start",
            Some(r#"{"HostConfig":{"Binds":["/:/h"]}}"#),
        ),
    );
    assert_denied(&d, "host-paths", "\"/\"");
    // No body, and the daemon would not read one (Content-Length <= 7).
    let mut r = request("POST", "/v1.23/containers/c1/start", None);
    r.headers.insert("Content-Length".into(), "0".into());
    assert_allowed(&evaluate(&policy, &r));
    // From 1.24 on the daemon refuses start bodies.
    assert_allowed(&evaluate(
        &policy,
        &request("POST", "/v1.24/containers/c1/start", None),
    ));
    assert_allowed(&evaluate(&policy, &recorded("start-plain")));
}

#[test]
fn update_to_unlimited_pids() {
    for limit in ["0", "-1", "-2"] {
        let d = evaluate(
            &baseline(),
            &request(
                "POST",
                "/v1.41/containers/c1/update",
                Some(&format!(r#"{{"PidsLimit":{limit}}}"#)),
            ),
        );
        assert_denied(&d, "pids-unlimited", "PidsLimit");
    }
    // Before 1.40 the daemon ignores PidsLimit on update.
    assert_allowed(&evaluate(
        &baseline(),
        &request(
            "POST",
            "/v1.39/containers/c1/update",
            Some(r#"{"PidsLimit":-1}"#),
        ),
    ));
    // On create, 0 is "the default" and only negative is explicit.
    assert_allowed(&create(r#"{"HostConfig":{"PidsLimit":0}}"#));
    assert_denied(
        &create(r#"{"HostConfig":{"PidsLimit":-2}}"#),
        "pids-unlimited",
        "-2",
    );
}

#[test]
fn seccomp_profiles_inlined_by_the_cli() {
    let allow_all = r#"{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":[]}"#;
    let d = create(&format!(
        r#"{{"HostConfig":{{"SecurityOpt":["seccomp={allow_all}"]}}}}"#
    ));
    assert_denied(&d, "seccomp-unconfined", "defaultAction SCMP_ACT_ALLOW");
    assert_denied(
        &create(r#"{"HostConfig":{"SecurityOpt":["seccomp:unconfined"]}}"#),
        "seccomp-unconfined",
        "seccomp=unconfined",
    );
    assert_allowed(&evaluate(&baseline(), &recorded("create-seccomp-file")));
}

#[test]
fn build_network_and_services() {
    let policy = baseline();
    let d = evaluate(
        &policy,
        &request("POST", "/v1.41/build?networkmode=host&t=x", None),
    );
    assert_denied(&d, "host-namespaces", "networkmode");
    let mut form = request(
        "POST",
        "/v1.41/build?remote=https://example.invalid/x.git",
        None,
    );
    form.headers.insert(
        "Content-Type".into(),
        "application/x-www-form-urlencoded".into(),
    );
    assert_denied(&evaluate(&policy, &form), "request-body", "form-urlencoded");
    assert_allowed(&evaluate(
        &policy,
        &request("POST", "/v1.41/build?t=x", None),
    ));
    let svc = |b: &str| evaluate(&policy, &request("POST", "/v1.41/services/create", Some(b)));
    assert_denied(
        &svc(r#"{"TaskTemplate":{"PluginSpec":{"Name":"x"},"Runtime":"plugin"}}"#),
        "plugins",
        "plugin service",
    );
    assert_denied(
        &svc(r#"{"TaskTemplate":{"ContainerSpec":{"Image":"x"},"Networks":[{"Target":"host"}]}}"#),
        "host-namespaces",
        "Networks[0].Target: host",
    );
    assert_denied(
        &svc(
            r#"{"TaskTemplate":{"ContainerSpec":{"Image":"x"},"Resources":{"Limits":{"Pids":-1}}}}"#,
        ),
        "pids-unlimited",
        "Pids: -1",
    );
}

#[test]
fn malformed_plugin_requests_are_denied() {
    let d = evaluate_wire(&baseline(), b"not json");
    assert_denied(&d, "request", "does not decode");
    let d = evaluate_wire(
        &baseline(),
        &vec![b' '; moat_policy::wire::MAX_REQUEST_BYTES + 1],
    );
    assert_denied(&d, "request", "larger than");
    let d = evaluate_wire(
        &baseline(),
        br#"{"RequestMethod":"GET","RequestUri":"/v1.41/info"}"#,
    );
    assert_allowed(&d);
}

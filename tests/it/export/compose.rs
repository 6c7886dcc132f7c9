//! `herder export compose`: `check-jsonschema --builtin-schema vendor.compose-spec` takes every
//! output, and the mapped values read back.

use std::process::Command;

use super::*;

fn check(file: &Path) {
    let mut c = Command::new(tool("check-jsonschema"));
    c.args(["--builtin-schema", "vendor.compose-spec"]).arg(file);
    validate("check-jsonschema (compose spec)", c, file);
}

#[test]
fn every_config_exports_to_a_valid_compose_file() {
    let h = TestHome::new();
    for config in configs() {
        let config = prepare(&h, &config);
        let dir = h.dir.path().join(config.file_name().unwrap()).with_extension("out");
        let out =
            export(&h, &config, &["export", "compose", "--image", "app:1", "-o", dir.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "export of {} failed:\n{}",
            config.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        check(&dir.join("compose.yaml"));
    }
}

#[test]
fn the_mapped_values_read_back_and_what_compose_lacks_is_named() {
    let h = TestHome::new();
    h.write("app.js", "");
    h.write("health.sh", "");
    let config = h.write(
        "herder.toml",
        r#"
[[apps]]
name = "api"
script = "app.js"
image = "registry.example/api:2"
instances = 3
kill_timeout = "12s"
kill_signal = "SIGINT"
memory_limit = "256M"
cpu_limit = 0.5
watch = ["src"]
log_max_size = "10M"
env = { NODE_ENV = "production", PORT = "3000", API_TOKEN = "s3cr3t" }
[[apps.health]]
kind = "readiness"
http = "http://127.0.0.1:3000/ready"
interval = "7s"
timeout = "2s"
failure_threshold = 4
initial_delay = "3s"

[[apps]]
name = "worker"
script = "app.js"
autorestart = false
"#,
    );
    let dir = h.dir.path().join("out");
    let out = export(&h, &config, &["export", "compose", "-o", dir.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // `worker` has no image: an error naming it and the flag; `api` is written all the same.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: compose: app `worker`: compose needs an image") && stderr.contains("--image"),
        "{stderr}"
    );
    for key in ["watch", "log_max_size", "max_restarts"] {
        assert!(
            stderr.contains(&format!("warning: compose: app `api`: `{key}")),
            "no warning for {key}:\n{stderr}"
        );
    }
    let file = dir.join("compose.yaml");
    check(&file);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("# api: note: `watch` is not exported"), "{text}");
    assert!(!text.contains("s3cr3t"), "{text}");

    let doc = &read_yaml(&file)[0];
    let services = doc["services"].as_object().unwrap();
    assert_eq!(services.keys().collect::<Vec<_>>(), ["api"]);
    let api = &doc["services"]["api"];
    assert_eq!(api["image"], "registry.example/api:2");
    assert_eq!(api["command"], serde_json::json!(["node", "app.js"]));
    assert_eq!(api["deploy"]["replicas"], 3);
    assert_eq!(api["deploy"]["resources"]["limits"]["memory"], format!("{}b", 256 * 1024 * 1024));
    assert_eq!(api["deploy"]["resources"]["limits"]["cpus"], "0.5");
    assert_eq!(api["stop_grace_period"], "12s");
    assert_eq!(api["stop_signal"], "SIGINT");
    assert_eq!(api["restart"], "unless-stopped");
    assert_eq!(api["environment"]["NODE_ENV"], "production");
    assert_eq!(api["environment"]["API_TOKEN"], "<API_TOKEN: set the secret value here>");
    // The shell's environment stays out: only what the file declares.
    assert!(api["environment"].get("PATH").is_none(), "{api}");
    assert_eq!(api["ports"], serde_json::json!(["3000"]));
    let hc = &api["healthcheck"];
    assert!(hc["test"][1].as_str().unwrap().contains("http://127.0.0.1:3000/ready"), "{hc}");
    assert_eq!((hc["interval"].as_str(), hc["timeout"].as_str()), (Some("7s"), Some("2s")));
    assert_eq!((hc["retries"].as_i64(), hc["start_period"].as_str()), (Some(4), Some("3s")));

    // With an image for every app, and the secrets asked for.
    let out = export(&h, &config, &["export", "compose", "--image", "app:1", "--include-secrets"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("API_TOKEN: s3cr3t") && text.contains("  worker:\n    image: \"app:1\""), "{text}");
    assert!(text.contains("restart: \"no\""), "{text}");
}

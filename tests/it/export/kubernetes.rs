//! `herder export kubernetes`: `kubernetes-validate --strict` takes every file written, the
//! mapped values read back, an app without an image is refused alone, and what Kubernetes
//! cannot express is a warning naming the app and the key.

use std::process::Command;

use super::*;

/// The Kubernetes releases the output must be valid for: an old one still in use, and a
/// recent one (the validator bundles the schemas of both, no network).
const VERSIONS: [&str; 2] = ["1.30.0", "1.35.0"];

/// Run `kubernetes-validate --strict` on `files` for each of [`VERSIONS`]; panics with what it
/// says and the files it names.
fn check(files: &[PathBuf]) {
    assert!(!files.is_empty(), "nothing to validate");
    for version in VERSIONS {
        let out = Command::new(tool("kubernetes-validate"))
            .args(["--strict", "--quiet", "-k", version])
            .args(files)
            .output()
            .unwrap_or_else(|e| panic!("cannot run kubernetes-validate: {e}"));
        if !out.status.success() {
            let said =
                format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            let named: String = files
                .iter()
                .filter(|f| said.contains(&*f.to_string_lossy()))
                .map(|f| format!("--- {}:\n{}", f.display(), std::fs::read_to_string(f).unwrap_or_default()))
                .collect();
            panic!("kubernetes-validate --strict -k {version} rejects the output:\n{said}\n{named}");
        }
    }
}

/// The files of `dir`, sorted.
fn written(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

#[test]
fn the_validator_rejects_what_kubernetes_would() {
    // The check below would pass anything if the validator did: a field Kubernetes does not
    // know must fail in strict mode.
    let h = TestHome::new();
    let bad = h.write(
        "bad.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  ports:\n    - port: 80\n      targetPortt: 80\n",
    );
    let out =
        Command::new(tool("kubernetes-validate")).args(["--strict", "--quiet"]).arg(&bad).output().unwrap();
    assert!(!out.status.success(), "kubernetes-validate took an unknown field");
}

#[test]
fn every_config_exports_to_valid_kubernetes_manifests() {
    let h = TestHome::new();
    let mut files = Vec::new();
    for config in configs() {
        let config = prepare(&h, &config);
        let dir = h.dir.path().join(config.file_name().unwrap()).with_extension("k8s");
        let out = export(
            &h,
            &config,
            &["export", "kubernetes", "--image", "app:1", "--cron-jobs", "-o", dir.to_str().unwrap()],
        );
        assert!(
            out.status.success(),
            "export of {} failed:\n{}",
            config.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let made = written(&dir);
        assert!(
            made.iter().any(|f| f.to_string_lossy().ends_with(".deployment.yaml")),
            "no Deployment for {}: {made:?}",
            config.display()
        );
        files.extend(made);
    }
    check(&files);
}

const ROUND_TRIP: &str = r#"
[[apps]]
name = "api"
script = "app.js"
image = "registry.example/api:2"
instances = 3
port = 3000
kill_timeout = "12s"
kill_signal = "SIGINT"
memory_limit = "256M"
cpu_limit = 0.5
max_memory_restart = "200M"
wait_ready = true
listen_timeout = "30s"
watch = ["src"]
cron_restart = "0 3 * * *"
cron_timezone = "Europe/Paris"
user = "1000"
group = "staff"
env = { NODE_ENV = "production", API_TOKEN = "s3cr3t" }

[apps.balancer]
listen = 8080
strategy = "ip_hash"

[[apps.health]]
kind = "readiness"
http = "http://127.0.0.1:3000/ready"
interval = "7s"
timeout = "2s"
failure_threshold = 4
success_threshold = 2
initial_delay = "3s"

[[apps.health]]
kind = "liveness"
exec = "./health.sh --quick"
interval = "10s"
failure_threshold = 5

[[apps]]
name = "worker"
script = "app.js"
autorestart = false
restart_delay = "2s"
"#;

#[test]
fn the_mapped_values_read_back() {
    let h = TestHome::new();
    h.write("app.js", "");
    h.write("health.sh", "");
    std::fs::create_dir_all(h.dir.path().join("src")).unwrap();
    let config = h.write("herder.toml", ROUND_TRIP);
    let dir = h.dir.path().join("out");
    let out = export(&h, &config, &["export", "kubernetes", "--cron-jobs", "-o", dir.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // `worker` has no image (tested on its own below); `api` is written.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let files = written(&dir);
    let names: Vec<String> =
        files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(
        names,
        [
            "api.configmap.yaml",
            "api.cronjob.yaml",
            "api.deployment.yaml",
            "api.secret.yaml",
            "api.service.yaml"
        ]
    );
    check(&files);
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(text.starts_with("# herder export kubernetes: app `api` of "), "{text}");
        assert!(!text.contains("s3cr3t"), "the secret is written without --include-secrets:\n{text}");
    }
    let deployment = std::fs::read_to_string(dir.join("api.deployment.yaml")).unwrap();
    assert!(deployment.contains("# note: `watch` is not exported"), "{deployment}");

    let d = &read_yaml(&dir.join("api.deployment.yaml"))[0];
    assert_eq!((d["apiVersion"].as_str(), d["kind"].as_str()), (Some("apps/v1"), Some("Deployment")));
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"], "api");
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["terminationGracePeriodSeconds"], 12);
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "registry.example/api:2");
    assert_eq!(c["command"], serde_json::json!(["node"]));
    assert_eq!(c["args"], serde_json::json!(["app.js"]));
    // Behind the balancer the pod listens on the app's port; the Service takes the public one.
    assert_eq!(c["ports"], serde_json::json!([{ "name": "http", "containerPort": 3000 }]));
    assert_eq!(c["resources"]["limits"], serde_json::json!({ "memory": "256Mi", "cpu": "500m" }));
    assert_eq!(c["envFrom"][0]["configMapRef"]["name"], "api-env");
    assert_eq!(c["envFrom"][1]["secretRef"]["name"], "api-env");
    assert_eq!(c["securityContext"], serde_json::json!({ "runAsUser": 1000 }));
    let ready = &c["readinessProbe"];
    assert_eq!(ready["httpGet"], serde_json::json!({ "path": "/ready", "port": 3000, "scheme": "HTTP" }));
    let ints = |probe: &serde_json::Value, keys: &[&str]| -> Vec<Option<i64>> {
        keys.iter().map(|k| probe[*k].as_i64()).collect()
    };
    assert_eq!(
        ints(
            ready,
            &[
                "periodSeconds",
                "timeoutSeconds",
                "failureThreshold",
                "successThreshold",
                "initialDelaySeconds"
            ]
        ),
        [Some(7), Some(2), Some(4), Some(2), Some(3)]
    );
    let live = &c["livenessProbe"];
    assert_eq!(live["exec"]["command"], serde_json::json!(["./health.sh", "--quick"]));
    assert_eq!(
        ints(live, &["periodSeconds", "failureThreshold", "successThreshold"]),
        [Some(10), Some(5), Some(1)]
    );
    // wait_ready: the readiness probe, with 30 s of `listen_timeout` at 7 s a try (5), yet
    // never fewer tries than its own 4.
    let startup = &c["startupProbe"];
    assert_eq!(startup["httpGet"], ready["httpGet"]);
    assert_eq!(
        ints(startup, &["failureThreshold", "successThreshold", "periodSeconds"]),
        [Some(5), Some(1), Some(7)]
    );
    // SIGINT from a preStop hook that waits for the app to end.
    let hook = c["lifecycle"]["preStop"]["exec"]["command"].as_array().unwrap();
    assert_eq!((hook[0].as_str(), hook[1].as_str()), (Some("sh"), Some("-c")));
    assert!(hook[2].as_str().unwrap().starts_with("kill -INT 1;"), "{hook:?}");

    let cm = &read_yaml(&dir.join("api.configmap.yaml"))[0];
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["data"], serde_json::json!({ "NODE_ENV": "production", "PORT": "3000" }));
    let secret = &read_yaml(&dir.join("api.secret.yaml"))[0];
    assert_eq!(
        secret["stringData"],
        serde_json::json!({ "API_TOKEN": "<API_TOKEN: set the secret value here>" })
    );

    let svc = &read_yaml(&dir.join("api.service.yaml"))[0];
    assert_eq!(svc["spec"]["selector"]["app.kubernetes.io/name"], "api");
    assert_eq!(svc["spec"]["sessionAffinity"], "ClientIP");
    assert_eq!(
        svc["spec"]["ports"],
        serde_json::json!([{ "name": "http", "port": 8080, "targetPort": 3000, "protocol": "TCP" }])
    );

    let cron = read_yaml(&dir.join("api.cronjob.yaml"));
    let kinds: Vec<&str> = cron.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ServiceAccount", "Role", "RoleBinding", "CronJob"]);
    let job = &cron[3]["spec"];
    assert_eq!(
        (job["schedule"].as_str(), job["timeZone"].as_str()),
        (Some("0 3 * * *"), Some("Europe/Paris"))
    );
    let job_pod = &job["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(job_pod["serviceAccountName"], "api-restart");
    assert_eq!(
        job_pod["containers"][0]["command"],
        serde_json::json!(["kubectl", "rollout", "restart", "deployment/api"])
    );
    assert_eq!(cron[1]["rules"][0]["resourceNames"], serde_json::json!(["api"]));

    // With an image for every app, and the secrets asked for, to stdout.
    let out = export(&h, &config, &["export", "kubernetes", "--image", "app:1", "--include-secrets"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let all = h.write("all.yaml", &String::from_utf8_lossy(&out.stdout));
    let docs = read_yaml(&all);
    let secret = docs.iter().find(|d| d["kind"] == "Secret").unwrap();
    assert_eq!(secret["stringData"]["API_TOKEN"], "s3cr3t");
    let worker =
        docs.iter().find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "worker").unwrap();
    assert_eq!(worker["spec"]["template"]["spec"]["containers"][0]["image"], "app:1");
    // Without `--cron-jobs`, `cron_restart` is a note and no CronJob.
    assert!(docs.iter().all(|d| d["kind"] != "CronJob"), "{docs:?}");
}

#[test]
fn an_app_without_an_image_is_refused_alone() {
    let h = TestHome::new();
    h.write("app.js", "");
    let config = h.write(
        "herder.toml",
        "[[apps]]\nname = \"api\"\nscript = \"app.js\"\nimage = \"api:1\"\nport = 3000\n\n\
         [[apps]]\nname = \"worker\"\nscript = \"app.js\"\nenv = { QUEUE = \"jobs\" }\n",
    );
    let dir = h.dir.path().join("out");
    let out = export(&h, &config, &["export", "kubernetes", "-o", dir.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let error =
        stderr.lines().find(|l| l.starts_with("error: kubernetes: app `worker`:")).unwrap_or_else(|| {
            panic!("no error naming `worker`:\n{stderr}");
        });
    assert!(error.contains("--image"), "{error}");
    let names: Vec<String> =
        written(&dir).iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["api.configmap.yaml", "api.deployment.yaml", "api.service.yaml"]);
    check(&written(&dir));
}

#[test]
fn each_key_kubernetes_cannot_express_is_a_warning_naming_the_app_and_the_key() {
    let h = TestHome::new();
    h.write("app.js", "");
    std::fs::create_dir_all(h.dir.path().join("src")).unwrap();
    let config = h.write(
        "herder.toml",
        r#"
[[apps]]
name = "api"
script = "app.js"
instances = "max"
watch = ["src"]
ignore_watch = ["*.tmp"]
kill_signal = "SIGQUIT"
max_memory_restart = "300M"
restart_delay = "1s"
exp_backoff_restart_delay = "100ms"
stop_exit_codes = [0]
watchdog = "20s"
wait_ready = true
cron_restart = "0 3 * * *"
user = "www-data"
group = "www-data"
log_max_size = "10M"
out_file = "out.log"
pid_file = "api.pid"
disable_logs = true
increment_var = "WORKER_ID"
env = { WORKER_ID = "0" }

[[apps.hooks]]
events = ["exit"]
command = "true"

[[apps]]
name = "once"
script = "app.js"
autorestart = false
"#,
    );
    let out = export(&h, &config, &["export", "kubernetes", "--image", "app:1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let text = String::from_utf8_lossy(&out.stdout);
    for (app, key) in [
        ("api", "watch"),
        ("api", "ignore_watch/watch_delay"),
        ("api", "instances"),
        ("api", "instance_var"),
        ("api", "increment_var"),
        ("api", "kill_signal"),
        ("api", "max_memory_restart"),
        ("api", "max_restarts/min_uptime"),
        ("api", "restart_delay"),
        ("api", "exp_backoff_restart_delay"),
        ("api", "stop_exit_codes"),
        ("api", "watchdog"),
        ("api", "wait_ready"),
        ("api", "cron_restart"),
        ("api", "user"),
        ("api", "group"),
        ("api", "log_max_size"),
        ("api", "out_file"),
        ("api", "pid_file"),
        ("api", "disable_logs"),
        ("api", "hooks"),
        ("once", "autorestart"),
    ] {
        let line = format!("warning: kubernetes: app `{app}`: `{key}");
        assert!(stderr.lines().any(|l| l.starts_with(&line)), "no `{line}` line:\n{stderr}");
        assert!(text.contains(&format!("# note: `{key}")), "no note on `{key}` in the output:\n{text}");
    }
}

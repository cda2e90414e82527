//! Alerts that arrive: from a real `rm -rf` to a SOC subscriber, through the
//! agent's spool and the collector, across crashes and restarts, and only
//! for those who may see them.

use std::{
    collections::BTreeMap,
    io::Write,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    collector::{free_port, issue, levee, Collector, Pki, Tail},
    support::{in_login_session, test_policy, Agent, Sandbox},
};

const WAIT: Duration = Duration::from_secs(60);

/// Agent arguments to ship alerts to `url` over plaintext loopback.
fn ship_args(sandbox: &Sandbox, url: &str) -> Vec<String> {
    vec![
        "--collector".into(),
        url.into(),
        "--insecure-plaintext".into(),
        "--spool".into(),
        sandbox.path().join("spool.redb").display().to_string(),
        "--heartbeat-secs".into(),
        "1".into(),
    ]
}

fn start_agent(sandbox: &Sandbox, args: &[String]) -> Agent {
    let policy = sandbox.path().join("policy.toml");
    std::fs::write(&policy, test_policy(sandbox, "enforce", 50, &[])).unwrap();
    let mut all: Vec<&str> = vec!["--policy", policy.to_str().unwrap()];
    all.extend(args.iter().map(String::as_str));
    Agent::start_with(sandbox, &all)
}

/// An attack in its own login session: alerts, and a kill.
fn attack(sandbox: &Sandbox, name: &str) -> u64 {
    let dir = sandbox.path().join("backups").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..120 {
        std::fs::write(dir.join(format!("f{i}")), b"x").unwrap();
    }
    let (_, session) = in_login_session(sandbox.path(), &format!("exec rm -rf backups/{name}"));
    session
}

fn ids(alerts: &[Value]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for a in alerts {
        *counts
            .entry(a["id"].as_str().unwrap_or_default().to_owned())
            .or_insert(0) += 1;
    }
    counts
}

#[test]
fn an_rm_rf_alert_reaches_a_soc_subscriber_and_the_metrics() {
    let sandbox = Sandbox::new();
    std::fs::create_dir(sandbox.path().join("backups")).unwrap();
    let (agent_metrics, collector_metrics) = (free_port(), free_port());
    let db = sandbox.path().join("c.db");
    let collector = Collector::start(
        free_port(),
        &[
            "--insecure-plaintext",
            "--database",
            db.to_str().unwrap(),
            "--metrics-listen",
            &collector_metrics.to_string(),
        ],
    );
    let url = collector.url();
    let tail = Tail::start(&["--collector", &url], 0);
    let mut args = ship_args(&sandbox, &url);
    args.extend(["--metrics-listen".into(), agent_metrics.to_string()]);
    let agent = start_agent(&sandbox, &args);

    let session = attack(&sandbox, "one");

    let key = format!("login:{session}");
    let received = tail.until(WAIT, |seen| {
        seen.iter()
            .any(|a| a["session"] == key.as_str() && a["severity"] == "critical")
    });
    let alert = received
        .iter()
        .find(|a| a["session"] == key.as_str() && a["severity"] == "critical")
        .expect("critical alert at the SOC");
    assert_eq!(alert["source"], "agent");
    assert!(!alert["agent_id"].as_str().unwrap().is_empty());
    assert!(alert["mitre"].as_array().unwrap().contains(&Value::from("T1485")));
    assert!(alert["features"].as_array().unwrap().iter().any(|f| f["name"]
        .as_str()
        .unwrap()
        .starts_with("guard:")
        || f["name"].as_str().unwrap().starts_with("limit_reached:")));
    let (ok, agents, _) = levee(&["--collector", &url, "agents", "--json"]);
    assert!(ok);
    let agents: Vec<Value> = agents.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0]["silent"], false);

    assert!(http_get(agent_metrics, "/healthz").starts_with("HTTP/1.1 200"));
    assert!(http_get(agent_metrics, "/readyz").starts_with("HTTP/1.1 200"));
    let metrics = http_get(agent_metrics, "/metrics");
    assert!(
        metrics.contains("levee_agent_events_total{kind=\"deletion\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("levee_agent_alerts_total{severity=\"critical\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("levee_agent_dropped_events{reason=\"ring_buffer_full\"} 0"),
        "{metrics}"
    );
    assert!(metrics.contains("levee_agent_spool_depth"), "{metrics}");
    let metrics = http_get(collector_metrics, "/metrics");
    let stored = metrics
        .lines()
        .find_map(|l| l.strip_prefix("levee_collector_alerts_stored_total "))
        .expect("stored counter");
    assert!(stored.trim().parse::<u64>().unwrap() >= 1, "{metrics}");
    assert!(
        metrics.contains("levee_collector_agents_connected 1"),
        "{metrics}"
    );
    agent.stop();
}

/// A plain HTTP/1.1 GET, the response as text.
fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the metrics endpoint");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn a_collector_down_for_10s_loses_nothing_and_duplicates_nothing() {
    let sandbox = Sandbox::new();
    std::fs::create_dir(sandbox.path().join("backups")).unwrap();
    let mut collector = Collector::plaintext(&sandbox, free_port());
    let url = collector.url();
    let agent = start_agent(&sandbox, &ship_args(&sandbox, &url));
    let tail = Tail::start(&["--collector", &url], 0);

    attack(&sandbox, "before");
    let before = agent.collect(
        |e| e["type"] == "alert",
        |seen| seen.iter().any(|a| a["severity"] == "critical"),
    );
    let first = tail.until(WAIT, |seen| ids(seen).len() >= ids(&before).len());
    let cursor = first.iter().map(|a| a["cursor"].as_u64().unwrap()).max().unwrap();

    collector.crash();
    let down = Instant::now();
    attack(&sandbox, "during-1");
    attack(&sandbox, "during-2");
    std::thread::sleep(Duration::from_secs(10).saturating_sub(down.elapsed()));
    collector.restart();
    drop(tail);
    // The subscriber comes back with its cursor, as a SOC client would.
    let tail = Tail::start(&["--collector", &url], cursor);

    let produced: Vec<Value> = agent
        .everything_until_now(&sandbox)
        .into_iter()
        .filter(|e| e["type"] == "alert")
        .collect();
    assert!(
        !produced.is_empty(),
        "no alert was raised while the collector was down"
    );
    let mut expected: Vec<Value> = before;
    expected.extend(produced);
    let expected = ids(&expected);
    let later = tail.until(WAIT, |seen| {
        expected
            .keys()
            .filter(|id| !ids(&first).contains_key(*id))
            .all(|id| ids(seen).contains_key(id))
    });
    let mut all = first;
    all.extend(later);
    // The collector may add its own agent-silent alert for the downtime.
    all.retain(|a| a["source"] == "agent");
    let received = ids(&all);
    assert_eq!(
        received.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "every alert, at the SOC"
    );
    assert!(received.values().all(|&n| n == 1), "exactly once: {received:?}");
    agent.stop();
}

#[test]
fn spooled_alerts_arrive_after_an_agent_restart() {
    let sandbox = Sandbox::new();
    std::fs::create_dir(sandbox.path().join("backups")).unwrap();
    let addr = free_port();
    let url = format!("http://{addr}");
    // No collector yet: alerts can only go to the spool.
    let agent = start_agent(&sandbox, &ship_args(&sandbox, &url));
    attack(&sandbox, "while-away");
    let produced = agent.collect(
        |e| e["type"] == "alert",
        |seen| seen.iter().any(|a| a["severity"] == "critical"),
    );
    let (lines, _) = agent.stop_with_stderr();
    let mut expected: Vec<Value> = produced;
    expected.extend(lines.into_iter().filter(|e| e["type"] == "alert"));
    let expected = ids(&expected);
    assert!(!expected.is_empty(), "the attack raised no alert to spool");

    let _collector = Collector::plaintext(&sandbox, addr);
    let tail = Tail::start(&["--collector", &url], 0);
    let agent = start_agent(&sandbox, &ship_args(&sandbox, &url));

    let received = tail.until(WAIT, |seen| expected.keys().all(|id| ids(seen).contains_key(id)));
    let received = ids(&received);
    assert!(
        expected.keys().all(|id| received.contains_key(id)),
        "spooled {expected:?}, received {received:?}"
    );
    agent.stop();
}

#[test]
fn garbage_and_a_half_open_http2_connection_do_not_crash_the_collector() {
    let sandbox = Sandbox::new();
    let mut collector = Collector::plaintext(&sandbox, free_port());
    let url = collector.url();

    let mut garbage = std::net::TcpStream::connect(collector.addr).unwrap();
    let noise: Vec<u8> = (0..65_536u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let _ = garbage.write_all(&noise);
    drop(garbage);
    let mut http1 = std::net::TcpStream::connect(collector.addr).unwrap();
    let _ = http1.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    // The HTTP/2 preface, then nothing: a client that never finishes.
    let mut half_open = std::net::TcpStream::connect(collector.addr).unwrap();
    half_open.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();

    let (ok, _, err) = levee(&["--collector", &url, "agents"]);
    assert!(ok, "the collector still answers: {err}");
    assert!(collector.is_running());
    drop(half_open);
    drop(http1);
}

#[test]
fn mutual_tls_refuses_a_wrong_certificate_and_the_soc_needs_a_token() {
    let sandbox = Sandbox::new();
    let dir = sandbox.path();
    std::fs::create_dir(dir.join("backups")).unwrap();
    let (pki, ca) = Pki::new(dir, "levee");
    let (agent_cert, agent_key) = issue(dir, &ca, "agent-1", &[]);
    let (_, rogue_ca) = Pki::new(dir, "rogue");
    let (rogue_cert, rogue_key) = issue(dir, &rogue_ca, "rogue-agent", &[]);
    let token = dir.join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let s = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let collector = Collector::start(
        free_port(),
        &[
            "--database",
            &s(&dir.join("c.db")),
            "--tls-cert",
            &s(&pki.server_cert),
            "--tls-key",
            &s(&pki.server_key),
            "--client-ca",
            &s(&pki.ca),
            "--soc-token-file",
            &s(&token),
        ],
    );
    let url = format!("https://localhost:{}", collector.addr.port());
    let tls_agent = |cert: &std::path::Path, key: &std::path::Path, spool: &str| -> Vec<String> {
        [
            "--collector",
            &url,
            "--collector-ca",
            &s(&pki.ca),
            "--collector-cert",
            &s(cert),
            "--collector-key",
            &s(key),
        ]
        .into_iter()
        .map(str::to_owned)
        .chain([
            "--spool".into(),
            s(&dir.join(spool)),
            "--heartbeat-secs".into(),
            "1".into(),
        ])
        .collect()
    };
    let soc = |token: Option<&std::path::Path>| {
        let mut args = vec!["--collector".to_owned(), url.clone(), "--ca".into(), s(&pki.ca)];
        if let Some(t) = token {
            args.extend(["--token-file".into(), s(t)]);
        }
        args
    };
    let run = |args: Vec<String>, rest: &[&str]| {
        let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
        all.extend(rest);
        levee(&all)
    };

    // The SOC without a token is refused; with it, served.
    let (ok, _, err) = run(soc(None), &["alerts", "list"]);
    assert!(
        !ok && err.contains("bearer token or a client certificate"),
        "{err}"
    );
    let wrong = dir.join("wrong-token");
    std::fs::write(&wrong, "guess").unwrap();
    let (ok, _, err) = run(soc(Some(&wrong)), &["alerts", "list"]);
    assert!(!ok && err.contains("invalid token"), "{err}");

    // A rogue agent (certificate from another CA) never registers.
    let rogue = start_agent(&sandbox, &tls_agent(&rogue_cert, &rogue_key, "rogue.redb"));
    std::thread::sleep(Duration::from_secs(3));
    let (_, rogue_stderr) = rogue.stop_with_stderr();
    assert!(
        rogue_stderr.contains("alerts stay spooled"),
        "the rogue agent says it cannot deliver: {rogue_stderr}"
    );

    // The real agent delivers, and is known by its certificate's name.
    let agent = start_agent(&sandbox, &tls_agent(&agent_cert, &agent_key, "agent.redb"));
    let session = attack(&sandbox, "tls");
    let key = format!("login:{session}");
    let token_args = soc(Some(&token));
    let token_args: Vec<&str> = token_args.iter().map(String::as_str).collect();
    let tail = Tail::start(&token_args, 0);
    let received = tail.until(WAIT, |seen| seen.iter().any(|a| a["session"] == key.as_str()));
    let alert = received
        .iter()
        .find(|a| a["session"] == key.as_str())
        .expect("alert over mutual TLS");
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert_eq!(
        alert["agent_id"],
        format!("agent-1@{host}"),
        "identity from the certificate, then the host"
    );
    let (ok, agents, err) = run(soc(Some(&token)), &["agents", "--json"]);
    assert!(ok, "{err}");
    assert!(
        agents.contains(&format!("\"agent-1@{host}\"")) && !agents.contains("rogue"),
        "{agents}"
    );
    agent.stop();
}

#[test]
fn an_agent_that_stops_reporting_raises_agent_silent() {
    let sandbox = Sandbox::new();
    let collector = Collector::plaintext(&sandbox, free_port());
    let url = collector.url();
    let agent = start_agent(&sandbox, &ship_args(&sandbox, &url));
    let registered = Instant::now();
    while !levee(&["--collector", &url, "agents"]).1.contains(" ok") {
        assert!(registered.elapsed() < WAIT, "the agent never registered");
        std::thread::sleep(Duration::from_millis(200));
    }
    agent.stop();

    let tail = Tail::start(&["--collector", &url], 0);
    let silent = tail.until(WAIT, |seen| seen.iter().any(|a| a["source"] == "collector"));
    let alert = silent
        .iter()
        .find(|a| a["source"] == "collector")
        .expect("an agent-silent alert");
    assert!(
        alert["summary"].as_str().unwrap().starts_with("agent-silent"),
        "{alert}"
    );
    assert_eq!(alert["severity"], "high");
    let (_, agents, _) = levee(&["--collector", &url, "agents", "--json"]);
    assert!(agents.contains("\"silent\":true"), "{agents}");
}

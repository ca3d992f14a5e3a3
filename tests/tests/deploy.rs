//! The AWS deployment: `infra/template.yaml` lints clean, deploys with `scripts/deploy --local` to
//! a fresh emulator of the test's own, and every resource is checked through its service's API
//! (the emulator reports success for types it never creates); alarms and IAM policies, which the
//! emulator does not evaluate, are checked on the expanded template. Also the Dockerfile
//! (hadolint and its runtime properties) and the compose file (`docker-compose config`).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::OnceLock;

use chronos_tests::aws::{Deployed, PrivateMoto, TempDir, deploy, repo_root, venv_tool};
use serde_json::{Value, json};

struct Fixture {
    moto: PrivateMoto,
    first: Deployed,
    second: Deployed,
    /// desiredCount of the worker service set between the two deploys.
    scaled_to: i64,
    _dir: TempDir,
}

/// One emulator and one stack for the whole file: deployed once, scaled, deployed again.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let moto = PrivateMoto::start();
        let dir = TempDir::new("deploy");
        let params = ["ImageTag=t1", "MaxWorkers=7", "TargetBacklogPerWorker=250", "ScaleInCooldownSeconds=120"];
        let first = deploy(&moto, &dir.0, "chronos-test", &params);
        // The scaler's doing: a second deploy must not reset it.
        let scaled_to = 4;
        moto.query(&format!(
            "c('ecs').update_service(cluster='chronos-test', service='chronos-test-workers', desiredCount={scaled_to}); print('{{}}')"
        ));
        let second = deploy(
            &moto,
            &dir.0,
            "chronos-test",
            &["ImageTag=t2", "MaxWorkers=7", "TargetBacklogPerWorker=250", "ScaleInCooldownSeconds=120"],
        );
        Fixture { moto, first, second, scaled_to, _dir: dir }
    })
}

fn resources<'a>(t: &'a Value, kind: &str) -> BTreeMap<&'a str, &'a Value> {
    t["Resources"].as_object().unwrap().iter().filter(|(_, r)| r["Type"] == kind).map(|(k, r)| (k.as_str(), r)).collect()
}

#[test]
fn the_template_passes_cfn_lint_and_sam_validate_with_no_findings() {
    let template = repo_root().join("infra/template.yaml");
    let out = Command::new(venv_tool("cfn-lint")).arg(&template).output().unwrap();
    // 0: nothing found; 2 errors, 4 warnings, 8 informational (bit flags).
    assert_eq!(out.status.code(), Some(0), "cfn-lint: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let out = Command::new(venv_tool("sam"))
        .args(["validate", "--lint", "--region", "us-east-1", "-t"])
        .arg(&template)
        .env("SAM_CLI_TELEMETRY", "0")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("is a valid SAM Template"), "sam validate --lint: {text}");
}

#[test]
fn the_stack_deploys_to_a_fresh_emulator_and_a_second_run_updates_it() {
    let f = fixture();
    assert!(f.first.log.contains("creating stack chronos-test"), "{}", f.first.log);
    assert!(f.second.log.contains("exists (CREATE_COMPLETE); updating it"), "{}", f.second.log);
    let status =
        f.moto.query("print(json.dumps(c('cloudformation').describe_stacks(StackName='chronos-test')['Stacks'][0]['StackStatus']))");
    assert_eq!(status, "UPDATE_COMPLETE");
    for key in ["ApiUrl", "DashboardUrl", "DlqUrl"] {
        let v = f.second.output(key);
        assert!(v.starts_with("http") && !v.contains("None"), "{key} = {v}");
    }
    let api = f.second.output("ApiUrl");
    let api_id = api.trim_start_matches("https://").split('.').next().unwrap();
    let gw = f.moto.query(&format!(
        "g = c('apigatewayv2'); print(json.dumps({{'routes': g.get_routes(ApiId='{api_id}')['Items'], 'stages': g.get_stages(ApiId='{api_id}')['Items'], 'integrations': g.get_integrations(ApiId='{api_id}')['Items']}}, default=str))"
    ));
    assert_eq!(gw["routes"][0]["RouteKey"], "$default", "{gw}");
    assert_eq!(gw["stages"][0]["StageName"], "$default", "{gw}");
    assert_eq!(gw["stages"][0]["DefaultRouteSettings"]["ThrottlingBurstLimit"], 1000, "{gw}");
    assert!(gw["stages"][0]["AccessLogSettings"]["DestinationArn"].as_str().unwrap().contains("api-access"), "{gw}");
    let integ = &gw["integrations"][0];
    assert_eq!((integ["IntegrationType"].as_str(), integ["PayloadFormatVersion"].as_str()), (Some("AWS_PROXY"), Some("2.0")), "{gw}");
    assert!(integ["IntegrationUri"].as_str().unwrap().ends_with(":function:chronos-test-api"), "{gw}");
}

#[test]
fn the_dead_letter_queue_exists_with_its_retention() {
    let f = fixture();
    let q = f.moto.query(
        "print(json.dumps(c('sqs').get_queue_attributes(QueueUrl=c('sqs').get_queue_url(QueueName='chronos-test-dlq')['QueueUrl'], AttributeNames=['All'])['Attributes']))",
    );
    assert_eq!(q["MessageRetentionPeriod"], "1209600", "{q}");
    assert!(f.second.output("DlqUrl").ends_with("/chronos-test-dlq"));
}

#[test]
fn the_ecs_services_and_task_definitions_have_the_image_size_stop_timeout_and_secrets() {
    let f = fixture();
    let ecs = f.moto.query(
        "e = c('ecs')\n\
         s = e.describe_services(cluster='chronos-test', services=['chronos-test-workers', 'chronos-test-dashboard'])['services']\n\
         td = {x['serviceName']: e.describe_task_definition(taskDefinition=x['taskDefinition'])['taskDefinition'] for x in s}\n\
         print(json.dumps({'clusters': e.describe_clusters(clusters=['chronos-test'])['clusters'], 'services': s, 'td': td}, default=str))",
    );
    assert_eq!(ecs["clusters"][0]["status"], "ACTIVE", "{ecs}");
    let db_secret = f.second.output("DatabaseUrlSecretArn");
    let admin_secret = f.second.output("AdminKeySecretArn");
    let repo = f.second.output("WorkerRepositoryUri");
    for svc in ecs["services"].as_array().unwrap() {
        let name = svc["serviceName"].as_str().unwrap();
        assert_eq!(svc["launchType"], "FARGATE", "{name}");
        assert_eq!(svc["networkConfiguration"]["awsvpcConfiguration"]["assignPublicIp"], "DISABLED", "{name}");
        let td = &ecs["td"][name];
        assert_eq!((td["networkMode"].as_str(), td["requiresCompatibilities"][0].as_str()), (Some("awsvpc"), Some("FARGATE")), "{td}");
        let c = &td["containerDefinitions"][0];
        // The second deploy's image: the services run the new revision.
        assert!(c["image"].as_str().unwrap().ends_with(":t2"), "{c}");
        let env: BTreeMap<&str, &str> =
            c["environment"].as_array().unwrap().iter().map(|e| (e["name"].as_str().unwrap(), e["value"].as_str().unwrap())).collect();
        assert!(!env.contains_key("DATABASE_URL") && !env.contains_key("CHRONOS_ADMIN_KEY"), "secrets as plain environment: {env:?}");
        let secrets: BTreeMap<&str, &str> =
            c["secrets"].as_array().unwrap().iter().map(|e| (e["name"].as_str().unwrap(), e["valueFrom"].as_str().unwrap())).collect();
        assert_eq!(secrets["DATABASE_URL"], db_secret, "{name}");
        assert!(env["REDIS_URL"].starts_with("redis://") && env["REDIS_URL"].ends_with(":6379"), "{env:?}");
        if name == "chronos-test-workers" {
            assert_eq!((td["cpu"].as_str(), td["memory"].as_str(), c["memory"].as_i64()), (Some("1024"), Some("2048"), Some(2048)), "{td}");
            assert!(c["image"].as_str().unwrap().starts_with(&repo), "{c}");
            // ECS waits this long after SIGTERM; the worker's grace must fit inside it.
            let grace_ms: i64 = env["CHRONOS_SHUTDOWN_GRACE_MS"].parse().unwrap();
            assert_eq!(c["stopTimeout"], 120, "{c}");
            assert!(grace_ms < 120_000, "{grace_ms}");
            assert_eq!(c["command"], json!(["worker"]));
            assert_eq!(c["healthCheck"]["command"], json!(["CMD", "/usr/local/bin/chronos", "health"]));
            assert_eq!(secrets.len(), 1, "the worker needs only DATABASE_URL: {secrets:?}");
            // Set by the "scaler" between the deploys; CloudFormation must not reset it.
            assert_eq!(svc["desiredCount"], f.scaled_to, "{svc}");
        } else {
            assert_eq!((td["cpu"].as_str(), td["memory"].as_str()), (Some("256"), Some("512")), "{td}");
            assert_eq!(secrets["CHRONOS_ADMIN_KEY"], admin_secret);
            assert_eq!(env["CHRONOS_DASHBOARD_ADDR"], "0.0.0.0:8081");
            assert_eq!(svc["loadBalancers"][0]["containerPort"], 8081, "{svc}");
            assert_eq!(svc["desiredCount"], 1);
            assert_eq!(c["portMappings"][0]["containerPort"], 8081);
        }
    }
    // The secret really holds a database URL naming the stack's database.
    let url = f.moto.query(&format!("print(json.dumps(c('secretsmanager').get_secret_value(SecretId='{db_secret}')['SecretString']))"));
    let url = url.as_str().unwrap();
    assert!(url.starts_with("postgres://chronos:") && url.ends_with(":5432/chronos") && url.contains(".rds.amazonaws.com"), "{url}");
}

#[test]
fn the_lambda_functions_have_their_runtime_handler_and_no_plain_secrets() {
    let f = fixture();
    let fns = f.moto.query(
        "l = c('lambda')\n\
         out = {n: l.get_function(FunctionName='chronos-test-' + n) for n in ['api', 'tick', 'scaler']}\n\
         for v in out.values(): v.pop('ResponseMetadata', None)\n\
         print(json.dumps(out, default=str))",
    );
    let secret_values = f.moto.query(&format!(
        "s = c('secretsmanager'); print(json.dumps([s.get_secret_value(SecretId=a)['SecretString'] for a in ['{}', '{}']]))",
        f.second.output("DatabaseUrlSecretArn"),
        f.second.output("AdminKeySecretArn")
    ));
    for (name, fun) in fns.as_object().unwrap() {
        let conf = &fun["Configuration"];
        assert_eq!((conf["Runtime"].as_str(), conf["Handler"].as_str()), (Some("provided.al2023"), Some("bootstrap")), "{name}");
        assert_eq!(conf["Architectures"], json!(["x86_64"]), "{name}");
        assert!(!conf["VpcConfig"]["SubnetIds"].as_array().unwrap().is_empty(), "{name} outside the VPC");
        let env = &conf["Environment"]["Variables"];
        assert!(env.get("DATABASE_URL").is_none() && env.get("CHRONOS_ADMIN_KEY").is_none(), "{name}: {env}");
        assert_eq!(env["DATABASE_URL_SECRET_ARN"], f.second.output("DatabaseUrlSecretArn"), "{name}");
        let text = env.to_string();
        for s in secret_values.as_array().unwrap() {
            assert!(!text.contains(s.as_str().unwrap()), "{name} carries a secret's value in its environment");
        }
    }
    assert_eq!(
        fns["api"]["Configuration"]["Environment"]["Variables"]["CHRONOS_ADMIN_KEY_SECRET_ARN"],
        f.second.output("AdminKeySecretArn")
    );
    assert_eq!(fns["api"]["Configuration"]["Timeout"], 29);
    let scaler = &fns["scaler"]["Configuration"]["Environment"]["Variables"];
    for (k, v) in [
        ("CHRONOS_ECS_CLUSTER", "chronos-test"),
        ("CHRONOS_ECS_SERVICE", "chronos-test-workers"),
        ("CHRONOS_SCALER_MAX", "7"),
        ("CHRONOS_SCALER_TARGET_BACKLOG", "250"),
        ("CHRONOS_SCALER_COOLDOWN_S", "120"),
    ] {
        let got = match &scaler[k] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        assert_eq!(got, v, "{k} in {scaler}");
    }
    assert_eq!(fns["scaler"]["Concurrency"]["ReservedConcurrentExecutions"], 1);
}

#[test]
fn eventbridge_runs_the_tick_and_the_scaler_every_minute() {
    let f = fixture();
    let rules = f.moto.query(
        "e = c('events')\n\
         print(json.dumps([{'rule': r, 'targets': e.list_targets_by_rule(Rule=r['Name'])['Targets']} for r in e.list_rules()['Rules']], default=str))",
    );
    let mut targets = BTreeSet::new();
    for r in rules.as_array().unwrap() {
        assert_eq!(r["rule"]["ScheduleExpression"], "rate(1 minute)", "{r}");
        assert_eq!(r["rule"]["State"], "ENABLED", "{r}");
        for t in r["targets"].as_array().unwrap() {
            targets.insert(t["Arn"].as_str().unwrap().rsplit(':').next().unwrap().to_owned());
            assert_eq!(t["RetryPolicy"]["MaximumRetryAttempts"], 0, "{t}");
        }
    }
    assert_eq!(targets, BTreeSet::from(["chronos-test-scaler".to_owned(), "chronos-test-tick".to_owned()]));
    // EventBridge may invoke them.
    let perms = f.moto.query(
        "l = c('lambda'); print(json.dumps({n: json.loads(l.get_policy(FunctionName='chronos-test-' + n)['Policy']) for n in ['tick', 'scaler']}))",
    );
    for n in ["tick", "scaler"] {
        assert_eq!(perms[n]["Statement"][0]["Principal"]["Service"], "events.amazonaws.com", "{perms}");
    }
}

#[test]
fn every_role_exists_and_may_do_exactly_what_its_code_does() {
    let f = fixture();
    let t = &f.second.template;
    let roles = resources(t, "AWS::IAM::Role");
    let got = f.moto.query(
        "cf, iam = c('cloudformation'), c('iam')\n\
         rs = [r for r in cf.describe_stack_resources(StackName='chronos-test')['StackResources'] if r.get('ResourceType') == 'AWS::IAM::Role']\n\
         out = {}\n\
         for r in rs:\n\
         \x20   name = r['PhysicalResourceId']\n\
         \x20   out[r['LogicalResourceId']] = {'role': iam.get_role(RoleName=name)['Role'], 'policies': {p: iam.get_role_policy(RoleName=name, PolicyName=p)['PolicyDocument'] for p in iam.list_role_policies(RoleName=name)['PolicyNames']}, 'managed': [p['PolicyArn'] for p in iam.list_attached_role_policies(RoleName=name)['AttachedPolicies']]}\n\
         print(json.dumps(out, default=str))",
    );
    let deployed: BTreeSet<&str> = got.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(deployed, roles.keys().copied().collect(), "roles through IAM vs the template");
    for (logical, r) in got.as_object().unwrap() {
        let principal = &r["role"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["Service"];
        let want = if logical.ends_with("ExecutionRole") || logical.ends_with("TaskRole") {
            "ecs-tasks.amazonaws.com"
        } else {
            "lambda.amazonaws.com"
        };
        assert_eq!(principal, want, "{logical}");
        assert_eq!(r["policies"].as_object().unwrap().len(), 1, "{logical}: one inline policy");
    }

    // Policies: action → resource, per role, on the expanded template.
    let statements = |role: &str| -> BTreeMap<String, Value> {
        let mut m = BTreeMap::new();
        for s in roles[role]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"].as_array().unwrap() {
            assert_eq!(s["Effect"], "Allow");
            let actions = match &s["Action"] {
                Value::String(a) => vec![a.clone()],
                Value::Array(a) => a.iter().map(|x| x.as_str().unwrap().to_owned()).collect(),
                other => panic!("{other}"),
            };
            for a in actions {
                assert!(!a.contains('*'), "{role}: wildcard action {a}");
                m.insert(a, s["Resource"].clone());
            }
        }
        m
    };
    let actions = |role: &str| statements(role).keys().cloned().collect::<BTreeSet<_>>();
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    let dlq = json!({"Fn::GetAtt": ["DeadLetterQueue", "Arn"]});
    let logs = ["logs:CreateLogStream", "logs:PutLogEvents"];

    let scaler = statements("ScalerRole");
    assert_eq!(
        actions("ScalerRole"),
        set(&[logs[0], logs[1], "secretsmanager:GetSecretValue", "ecs:DescribeServices", "ecs:UpdateService"])
    );
    let svc = json!({"Fn::Sub": "arn:${AWS::Partition}:ecs:${AWS::Region}:${AWS::AccountId}:service/${Cluster}/${AWS::StackName}-workers"});
    assert_eq!(scaler["ecs:UpdateService"], svc, "the worker service only");
    assert_eq!(scaler["ecs:DescribeServices"], svc);
    assert_eq!(scaler["secretsmanager:GetSecretValue"], json!({"Ref": "DatabaseUrlSecret"}));

    let worker = statements("WorkerTaskRole");
    assert_eq!(actions("WorkerTaskRole"), set(&["sqs:GetQueueUrl", "sqs:SendMessage"]), "the worker sends to the DLQ only");
    assert_eq!(worker["sqs:SendMessage"], dlq);

    let api = statements("ApiRole");
    assert_eq!(
        actions("ApiRole"),
        set(&[
            logs[0],
            logs[1],
            "secretsmanager:GetSecretValue",
            "sqs:GetQueueUrl",
            "sqs:ReceiveMessage",
            "sqs:DeleteMessage",
            "sqs:ChangeMessageVisibility"
        ])
    );
    assert_eq!(api["sqs:DeleteMessage"], dlq);
    assert_eq!(api["secretsmanager:GetSecretValue"], json!([{"Ref": "DatabaseUrlSecret"}, {"Ref": "AdminKeySecret"}]));
    assert_eq!(actions("TickRole"), set(&[logs[0], logs[1], "secretsmanager:GetSecretValue"]));
    assert_eq!(statements("TickRole")["logs:PutLogEvents"], json!({"Fn::GetAtt": ["TickLogs", "Arn"]}));

    let wexec = statements("WorkerExecutionRole");
    assert_eq!(wexec["secretsmanager:GetSecretValue"], json!({"Ref": "DatabaseUrlSecret"}), "the worker's tasks cannot read the admin key");
    assert_eq!(wexec["ecr:BatchGetImage"], json!({"Fn::GetAtt": ["WorkerRepository", "Arn"]}));
    assert_eq!(
        statements("DashboardExecutionRole")["secretsmanager:GetSecretValue"],
        json!([{"Ref": "DatabaseUrlSecret"}, {"Ref": "AdminKeySecret"}])
    );
    // The one "*": ECR's login call has no resource to scope it to.
    for role in roles.keys() {
        for (a, r) in statements(role) {
            assert!(r != json!("*") || a == "ecr:GetAuthorizationToken", "{role}: {a} on *");
        }
    }
}

#[test]
fn the_alarms_watch_what_the_issue_names_and_notify_the_topic() {
    let t = &fixture().second.template;
    let alarms = resources(t, "AWS::CloudWatch::Alarm");
    let mut watched = BTreeSet::new();
    for (name, a) in &alarms {
        let p = &a["Properties"];
        let topic = json!({"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]});
        assert_eq!(p["AlarmActions"], topic, "{name}");
        assert_eq!(p["OKActions"], topic, "{name}");
        assert!(p["AlarmDescription"].is_string(), "{name}");
        if let Some(metric) = p["MetricName"].as_str() {
            watched.insert(format!("{}/{metric}", p["Namespace"].as_str().unwrap()));
        } else {
            for m in p["Metrics"].as_array().unwrap() {
                if let Some(stat) = m.get("MetricStat") {
                    watched.insert(format!(
                        "{}/{}",
                        stat["Metric"]["Namespace"].as_str().unwrap(),
                        stat["Metric"]["MetricName"].as_str().unwrap()
                    ));
                }
            }
        }
    }
    let want = [
        "AWS/SQS/ApproximateNumberOfMessagesVisible",
        "Chronos/OldestTaskAgeSeconds",
        "Chronos/BacklogPerWorker",
        "Chronos/chronos_tasks_failed_total",
        "Chronos/chronos_tasks_completed_total",
        "Chronos/chronos_outbox_length",
        "AWS/Lambda/Errors",
        "AWS/Lambda/Throttles",
        "AWS/RDS/CPUUtilization",
        "AWS/RDS/FreeableMemory",
        "AWS/ElastiCache/EngineCPUUtilization",
        "AWS/ElastiCache/DatabaseMemoryUsagePercentage",
    ];
    assert_eq!(watched, want.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>());
    // Errors and throttles of each of the three functions.
    for fun in ["ApiFunction", "TickFunction", "ScalerFunction"] {
        for metric in ["Errors", "Throttles"] {
            assert!(
                alarms
                    .values()
                    .any(|a| a["Properties"]["MetricName"] == metric && a["Properties"]["Dimensions"][0]["Value"] == json!({"Ref": fun})),
                "no {metric} alarm for {fun}"
            );
        }
    }
    let dlq = &alarms["DeadLetterAlarm"]["Properties"];
    assert_eq!((dlq["Threshold"].as_i64(), dlq["ComparisonOperator"].as_str()), (Some(1), Some("GreaterThanOrEqualToThreshold")));
    let backlog = &alarms["BacklogPerWorkerAlarm"]["Properties"];
    assert_eq!(backlog["Threshold"], json!({"Ref": "TargetBacklogPerWorker"}));
    assert_eq!(backlog["EvaluationPeriods"], json!({"Ref": "BacklogAlarmMinutes"}));
    let rate = &alarms["WorkerErrorRateAlarm"]["Properties"]["Metrics"][2];
    assert_eq!(rate["Expression"], "IF(failed + completed > 0, 100 * failed / (failed + completed), 0)");
}

#[test]
fn the_dockerfile_passes_hadolint_and_runs_chronos_as_non_root_with_sigterm_and_a_health_check() {
    let path = repo_root().join("Dockerfile");
    let out = Command::new(venv_tool("hadolint")).arg(&path).output().unwrap();
    assert!(out.status.success(), "hadolint: {}", String::from_utf8_lossy(&out.stdout));
    let text = std::fs::read_to_string(&path).unwrap();
    // Instructions, with continuation lines joined.
    let joined = text.replace("\\\n", " ");
    let lines: Vec<&str> = joined.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    let stages: Vec<&str> = lines.iter().filter(|l| l.starts_with("FROM ")).copied().collect();
    assert!(stages.len() >= 3, "multi-stage: {stages:?}");
    assert!(lines.iter().any(|l| l.contains("cargo chef cook")), "dependency layer caching");
    let runtime_at = lines.iter().rposition(|l| l.starts_with("FROM ")).unwrap();
    let runtime = &lines[runtime_at..];
    assert!(runtime[0].contains("distroless"), "{}", runtime[0]);
    let user = runtime.iter().find_map(|l| l.strip_prefix("USER ")).expect("USER in the runtime stage");
    let uid: u32 = user.split(':').next().unwrap().parse().expect("numeric user");
    assert_ne!(uid, 0, "runs as root");
    assert!(runtime.contains(&"STOPSIGNAL SIGTERM"));
    let health = runtime.iter().find(|l| l.starts_with("HEALTHCHECK ")).expect("HEALTHCHECK");
    assert!(health.contains(r#"CMD ["/usr/local/bin/chronos", "health"]"#), "{health}");
    assert!(runtime.contains(&r#"ENTRYPOINT ["/usr/local/bin/chronos"]"#));
    assert!(runtime.iter().any(|l| l.starts_with("COPY --from=builder ") && l.ends_with("/usr/local/bin/chronos")));
}

#[test]
fn the_compose_file_is_valid_and_runs_every_piece() {
    let file = repo_root().join("infra/docker-compose.yml");
    let run = |args: &[&str]| {
        let out = Command::new("docker-compose")
            .arg("-f")
            .arg(&file)
            .args(args)
            .output()
            .expect("docker-compose (scripts/lib.sh ensure_compose)");
        assert!(out.status.success(), "docker-compose {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    run(&["config", "-q"]);
    let services: BTreeSet<String> = run(&["config", "--services"]).lines().map(str::to_owned).collect();
    for s in ["redis", "postgres", "localstack", "migrate", "api", "tick", "scaler", "worker", "dashboard"] {
        assert!(services.contains(s), "no {s} service: {services:?}");
    }
    let cfg = run(&["config"]);
    for cmd in ["- worker", "- dashboard", "- scaler", "- tick", "- api"] {
        assert!(cfg.contains(cmd), "no service runs `chronos {}`", &cmd[2..]);
    }
    assert!(!cfg.contains("0.0.0.0:"), "a port published beyond 127.0.0.1");
}

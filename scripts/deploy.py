"""Deployment steps scripts/deploy runs with the venv's Python (boto3, aws-sam-translator).

  deploy.py local --template T --stack S --lambda-dir D [--out F] [--param K=V ...]
      Expand the SAM transform offline, upload the Lambda zips, create the stack on the
      emulator named by AWS_ENDPOINT_URL (or update it when it exists), wait, print the Outputs.
  deploy.py migrate --stack S
      Run `chronos migrate` once as a Fargate task of the worker task definition and wait for it.
  deploy.py overrides --config C [K=V ...]
      Print the samconfig.toml parameter overrides with K=V set (for `sam deploy --parameter-overrides`).
  deploy.py dev-ecs --cluster C --service S [--show]
      For scripts/dev: an ECS cluster and Fargate worker service on the emulator for `chronos scaler`
      to size (created once, reused after); --show prints its desired and running counts.
"""

import argparse
import copy
import json
import os
import re
import secrets
import shlex
import string
import sys
import time
import tomllib

import boto3
import botocore.exceptions


def log(msg):
    print(f"[chronos] {msg}", file=sys.stderr, flush=True)


def client(name):
    return boto3.client(name, endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)


def load_sam(path):
    # The SAM CLI's loader understands the short intrinsic tags (!Ref, !Sub, !GetAtt, ...).
    from samcli.yamlhelper import yaml_parse

    with open(path) as f:
        return yaml_parse(f.read())


def expand(sam):
    """The SAM transform, offline: every policy in the template is inline or an AWS managed
    policy named by ARN, so no IAM lookup is needed."""
    from samtranslator.translator.transform import transform

    class NoManagedPolicyLookup:
        def load(self):
            raise RuntimeError("the template names a managed policy by name; use its ARN")

    return transform(sam, {}, NoManagedPolicyLookup())


def default_network(ec2):
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        sys.exit("no default VPC on the emulator: pass --param VpcId=... PrivateSubnetIds=... LoadBalancerSubnetIds=...")
    vpc = vpcs[0]["VpcId"]
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
    ids = ",".join(s["SubnetId"] for s in sorted(subnets, key=lambda s: s["AvailabilityZone"])[:3])
    return {"VpcId": vpc, "PrivateSubnetIds": ids, "LoadBalancerSubnetIds": ids}


def upload_code(sam, lambda_dir, stack):
    """Point each function's CodeUri at its cargo-lambda zip, uploaded to the emulator's S3."""
    s3 = client("s3")
    account = client("sts").get_caller_identity()["Account"]
    bucket = f"{stack}-artifacts-{account}".lower()
    try:
        s3.head_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError:
        s3.create_bucket(Bucket=bucket)
    for name, res in sam["Resources"].items():
        if res.get("Type") != "AWS::Serverless::Function":
            continue
        binary = res["Metadata"]["BuildProperties"]["Binary"]
        path = os.path.join(lambda_dir, binary, "bootstrap.zip")
        if not os.path.isfile(path):
            sys.exit(f"{path} not found: run scripts/build-lambdas first")
        key = f"{binary}/{os.path.getmtime(path):.0f}-{os.path.getsize(path)}.zip"
        s3.upload_file(path, bucket, key)
        res["Properties"]["CodeUri"] = {"Bucket": bucket, "Key": key}
        log(f"{name}: s3://{bucket}/{key} ({os.path.getsize(path)} bytes)")


# ---------------------------------------------------------------- the emulator's gaps
# moto's CloudFormation cannot create these types (it skips them, or fails on a GetAtt of one),
# though its service APIs can. For --local they are created through those APIs the way
# CloudFormation would, with deterministic names so a second run finds them, and every Ref,
# GetAtt and Sub of them in the template is replaced by the real value. Values that depend on
# resources the stack creates (a secret naming the database endpoint, the HTTP API's stage and
# route to the function) are set once the stack exists.
SHIMMED = {
    "AWS::SecretsManager::Secret",
    "AWS::ElastiCache::ParameterGroup",
    "AWS::ElastiCache::SubnetGroup",
    "AWS::ElastiCache::ReplicationGroup",
    "AWS::ApiGatewayV2::Api",
    "AWS::ApiGatewayV2::Stage",
    # moto creates this one, but its Ref yields an object instead of the group's name.
    "AWS::RDS::DBParameterGroup",
    # moto creates these from a template without the task size, network mode, launch type,
    # network configuration and load balancers: they are registered and created through the ECS
    # API after the stack, from the template's properties (nothing in the stack refers to them).
    "AWS::ECS::TaskDefinition",
    "AWS::ECS::Service",
}
AFTER_STACK = ["AWS::ECS::TaskDefinition", "AWS::ECS::Service"]


def generate_secret(spec):
    alphabet = string.ascii_letters + string.digits
    if not spec.get("ExcludePunctuation"):
        alphabet += "!#$%&()*+,-.:;<=>?@[]^_{|}~"
    value = "".join(secrets.choice(alphabet) for _ in range(int(spec.get("PasswordLength", 32))))
    if "SecretStringTemplate" in spec:
        doc = json.loads(spec["SecretStringTemplate"])
        doc[spec["GenerateStringKey"]] = value
        return json.dumps(doc)
    return value


class Shim:
    def __init__(self, stack, cfn, params):
        defaults = {k: str(v["Default"]) for k, v in cfn.get("Parameters", {}).items() if "Default" in v}
        self.stack, self.cfn, self.params = stack, cfn, {**defaults, **params}
        self.refs, self.atts, self.later = {}, {}, []

    def name(self, logical):
        return f"{self.stack}-{logical}".lower()[:40]

    def provision(self):
        res = self.cfn["Resources"]
        order = ["AWS::RDS::DBParameterGroup", "AWS::SecretsManager::Secret", "AWS::ElastiCache::ParameterGroup", "AWS::ElastiCache::SubnetGroup",
                 "AWS::ElastiCache::ReplicationGroup", "AWS::ApiGatewayV2::Api", "AWS::ApiGatewayV2::Stage"]
        for kind in order:
            for logical, r in list(res.items()):
                if r["Type"] == kind:
                    getattr(self, kind.split("::", 1)[1].replace("::", "_"))(logical, r.get("Properties", {}))
        self.after = [(k, r) for kind in AFTER_STACK for k, r in res.items() if r["Type"] == kind]
        for logical in [k for k, r in res.items() if r["Type"] in SHIMMED]:
            del res[logical]
        self.cfn = self.substitute(self.cfn)
        for r in self.cfn["Resources"].values():
            if "DependsOn" in r:
                deps = [d for d in ([r["DependsOn"]] if isinstance(r["DependsOn"], str) else r["DependsOn"]) if d in self.cfn["Resources"]]
                r["DependsOn"] = deps
        return self.cfn

    def substitute(self, v):
        if isinstance(v, list):
            return [self.substitute(x) for x in v]
        if not isinstance(v, dict):
            return v
        if set(v) == {"Ref"} and v["Ref"] in self.refs:
            return self.refs[v["Ref"]]
        if set(v) == {"Fn::GetAtt"}:
            a = v["Fn::GetAtt"]
            res, att = (a.split(".", 1) if isinstance(a, str) else a)
            if (res, att) in self.atts:
                return self.atts[(res, att)]
        if set(v) == {"Fn::Sub"}:
            body = v["Fn::Sub"]
            text, extra = (body, None) if isinstance(body, str) else (body[0], body[1])

            def known(m):
                key = m.group(1)
                if key in self.refs:
                    return str(self.refs[key])
                if "." in key and tuple(key.split(".", 1)) in self.atts:
                    return str(self.atts[tuple(key.split(".", 1))])
                return m.group(0)

            text = re.sub(r"\$\{([^}!]+)\}", known, text)
            return {"Fn::Sub": text if extra is None else [text, self.substitute(extra)]}
        return {k: self.substitute(x) for k, x in v.items()}

    def SecretsManager_Secret(self, logical, p):
        sm = client("secretsmanager")
        name = f"{self.stack}/{logical}"
        try:
            arn = sm.describe_secret(SecretId=name)["ARN"]
        except botocore.exceptions.ClientError:
            first = generate_secret(p["GenerateSecretString"]) if "GenerateSecretString" in p else "(set once the stack exists)"
            arn = sm.create_secret(Name=name, Description=p.get("Description", ""), SecretString=first)["ARN"]
        if "SecretString" in p:
            self.later.append(("secret", arn, p["SecretString"]))
        self.refs[logical] = arn

    def RDS_DBParameterGroup(self, logical, p):
        rds = client("rds")
        name = self.name(logical)
        try:
            exists = bool(rds.describe_db_parameter_groups(DBParameterGroupName=name)["DBParameterGroups"])
        except botocore.exceptions.ClientError:
            exists = False
        if not exists:
            rds.create_db_parameter_group(DBParameterGroupName=name, DBParameterGroupFamily=p["Family"], Description=p["Description"])
            rds.modify_db_parameter_group(
                DBParameterGroupName=name,
                Parameters=[{"ParameterName": k, "ParameterValue": v, "ApplyMethod": "pending-reboot"} for k, v in p.get("Parameters", {}).items()],
            )
        self.refs[logical] = name

    def ElastiCache_ParameterGroup(self, logical, p):
        # The emulator has no parameter-group API: the name is what the replication group refers to.
        self.refs[logical] = self.name(logical)

    def ElastiCache_SubnetGroup(self, logical, p):
        ec = client("elasticache")
        name = self.name(logical)
        subnets = self.resolve_params(p["SubnetIds"])
        try:
            exists = bool(ec.describe_cache_subnet_groups(CacheSubnetGroupName=name)["CacheSubnetGroups"])
        except botocore.exceptions.ClientError:
            exists = False
        if not exists:
            ec.create_cache_subnet_group(CacheSubnetGroupName=name, CacheSubnetGroupDescription=p["Description"], SubnetIds=subnets)
        self.refs[logical] = name

    def ElastiCache_ReplicationGroup(self, logical, p):
        ec = client("elasticache")
        rid = self.name(logical)
        try:
            g = ec.describe_replication_groups(ReplicationGroupId=rid)["ReplicationGroups"][0]
        except botocore.exceptions.ClientError:
            replicas = int(self.params.get("RedisReplicas", "1"))
            g = ec.create_replication_group(
                ReplicationGroupId=rid,
                ReplicationGroupDescription=p["ReplicationGroupDescription"],
                Engine="redis",
                CacheNodeType=self.params.get("RedisNodeType", "cache.t4g.small"),
                NumCacheClusters=max(1, replicas),
                CacheSubnetGroupName=self.refs["RedisSubnets"],
                CacheParameterGroupName=self.refs["RedisParameters"],
            )["ReplicationGroup"]
        ep = (g.get("NodeGroups") or [{}])[0].get("PrimaryEndpoint") or {"Address": f"{rid}.cache.local", "Port": 6379}
        self.refs[logical] = rid
        self.atts[(logical, "PrimaryEndPoint.Address")] = ep["Address"]
        self.atts[(logical, "PrimaryEndPoint.Port")] = str(ep.get("Port", 6379))

    def ApiGatewayV2_Api(self, logical, p):
        gw = client("apigatewayv2")
        name = f"{self.stack}-{logical}"
        found = [a for a in gw.get_apis()["Items"] if a["Name"] == name]
        api = found[0] if found else gw.create_api(Name=name, ProtocolType="HTTP")
        self.refs[logical] = api["ApiId"]
        self.later.append(("api", api["ApiId"], p.get("Body", {})))

    def ApiGatewayV2_Stage(self, logical, p):
        self.later.append(("stage", self.refs[p["ApiId"]["Ref"]], p))
        self.refs[logical] = p["StageName"]

    def resolve_params(self, v):
        if isinstance(v, dict) and set(v) == {"Ref"} and v["Ref"] in self.params:
            val = self.params[v["Ref"]]
            return val.split(",") if "," in val or v["Ref"].endswith("Ids") else val
        return v

    def finish(self):
        """After the stack exists: the values that name its resources."""
        physical = {r["LogicalResourceId"]: r["PhysicalResourceId"]
                    for r in client("cloudformation").describe_stack_resources(StackName=self.stack)["StackResources"]
                    # the emulator lists the types it skipped (alarms) without ids
                    if "LogicalResourceId" in r and "PhysicalResourceId" in r}
        for kind, target, spec in self.later:
            if kind == "secret":
                value = self.resolve(spec, physical)
                client("secretsmanager").put_secret_value(SecretId=target, SecretString=value)
            elif kind == "api":
                self.api_target = self.resolve(spec, physical)
            elif kind == "stage":
                self.stage(target, self.resolve(spec, physical))
        for logical, r in self.after:
            if "Condition" in r and not self.condition(r["Condition"]):
                continue
            props = self.resolve(r["Properties"], physical)
            if r["Type"] == "AWS::ECS::TaskDefinition":
                spec = api_shape(props)
                # The task's size is a string in this API; a container's memory a number.
                spec.update({k: str(spec[k]) for k in ("cpu", "memory") if k in spec})
                td = client("ecs").register_task_definition(**spec)["taskDefinition"]
                self.refs[logical] = td["taskDefinitionArn"]
            else:
                self.service(props)

    def service(self, p):
        ecs = client("ecs")
        spec = api_shape(p)
        name, cluster = spec.pop("serviceName"), spec.pop("cluster")
        found = [x for x in ecs.describe_services(cluster=cluster, services=[name]).get("services", []) if x["status"] == "ACTIVE"]
        if found:
            # As CloudFormation does: a new task definition and settings, and the desired count
            # left alone when the template does not name one (the scaler owns it).
            keep = {k: spec[k] for k in ("taskDefinition", "desiredCount", "networkConfiguration", "deploymentConfiguration") if k in spec}
            ecs.update_service(cluster=cluster, service=name, **keep)
        else:
            spec.setdefault("desiredCount", 1)
            ecs.create_service(cluster=cluster, serviceName=name, **spec)

    def condition(self, name):
        def ev(c):
            if isinstance(c, dict):
                (fn, arg), = c.items()
                if fn == "Fn::Equals":
                    a, b = (str(ev(x)) for x in arg)
                    return a == b
                if fn == "Fn::Not":
                    return not ev(arg[0])
                if fn == "Fn::And":
                    return all(ev(x) for x in arg)
                if fn == "Fn::Or":
                    return any(ev(x) for x in arg)
                if fn == "Condition":
                    return ev(self.cfn["Conditions"][arg])
                if fn == "Ref":
                    return self.params[arg]
            return c
        return ev(self.cfn["Conditions"][name])

    def stage(self, api_id, p):
        gw = client("apigatewayv2")
        uri = self.api_target["paths"]["$default"]["x-amazon-apigateway-any-method"]["x-amazon-apigateway-integration"]["uri"]
        function_arn = re.search(r"functions/(.+)/invocations", uri).group(1)
        if not gw.get_integrations(ApiId=api_id)["Items"]:
            integ = gw.create_integration(ApiId=api_id, IntegrationType="AWS_PROXY", IntegrationUri=function_arn, PayloadFormatVersion="2.0")
            gw.create_route(ApiId=api_id, RouteKey="$default", Target=f"integrations/{integ['IntegrationId']}")
        if not [s for s in gw.get_stages(ApiId=api_id)["Items"] if s["StageName"] == p["StageName"]]:
            routes = {k: int(float(v)) for k, v in p.get("DefaultRouteSettings", {}).items()}
            gw.create_stage(ApiId=api_id, StageName=p["StageName"], AutoDeploy=True, DefaultRouteSettings=routes,
                            AccessLogSettings=p.get("AccessLogSettings", {}))

    def resolve(self, v, physical):
        """Ref, GetAtt, Sub and dynamic references, for what the shim sets after the stack exists."""
        if isinstance(v, list):
            return [self.resolve(x, physical) for x in v]
        if isinstance(v, str):
            def dyn(m):
                doc = client("secretsmanager").get_secret_value(SecretId=m.group(1))["SecretString"]
                return json.loads(doc)[m.group(2)] if m.group(2) else doc
            return re.sub(r"\{\{resolve:secretsmanager:(.+?):SecretString(?::([^:}]+))?\}\}", dyn, v)
        if not isinstance(v, dict):
            return v
        if set(v) == {"Ref"}:
            return self.ref(v["Ref"], physical)
        if set(v) == {"Fn::If"}:
            cond, yes, no = v["Fn::If"]
            return self.resolve(yes if self.condition(cond) else no, physical)
        if set(v) == {"Fn::GetAtt"}:
            a = v["Fn::GetAtt"]
            return self.att(*(a.split(".", 1) if isinstance(a, str) else a), physical)
        if set(v) == {"Fn::Sub"}:
            body = v["Fn::Sub"]
            text, extra = (body, {}) if isinstance(body, str) else (body[0], self.resolve(body[1], physical))

            def one(m):
                key = m.group(1)
                if key in extra:
                    return str(extra[key])
                if "." in key:
                    return str(self.att(*key.split(".", 1), physical))
                return str(self.ref(key, physical))

            return self.resolve(re.sub(r"\$\{([^}!]+)\}", one, text), physical)
        out = {k: self.resolve(x, physical) for k, x in v.items()}
        return {k: x for k, x in out.items() if x is not NO_VALUE}

    def ref(self, name, physical):
        if name == "AWS::NoValue":
            return NO_VALUE
        kind = self.cfn.get("Parameters", {}).get(name, {}).get("Type", "")
        if kind.startswith("List<") or kind == "CommaDelimitedList":
            return self.params[name].split(",")
        pseudo = {"AWS::Region": os.environ.get("AWS_REGION", "us-east-1"), "AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com",
                  "AWS::StackName": self.stack, "AWS::AccountId": client("sts").get_caller_identity()["Account"]}
        for table in (pseudo, self.params, self.refs, physical):
            if name in table:
                return table[name]
        raise KeyError(f"cannot resolve Ref {name}")

    def att(self, res, att, physical):
        if (res, att) in self.atts:
            return self.atts[(res, att)]
        pid = physical[res]
        if att.startswith("Endpoint."):
            db = client("rds").describe_db_instances(DBInstanceIdentifier=pid)["DBInstances"][0]["Endpoint"]
            return db[att.split(".", 1)[1]]
        if att == "Arn" and res.endswith("Role"):
            return client("iam").get_role(RoleName=pid)["Role"]["Arn"]
        if att == "RepositoryUri":
            return client("ecr").describe_repositories(repositoryNames=[pid])["repositories"][0]["repositoryUri"]
        if att == "QueueName":
            return pid.rstrip("/").rsplit("/", 1)[1]
        if att == "Arn" and res.endswith("Function"):
            return client("lambda").get_function(FunctionName=pid)["Configuration"]["FunctionArn"]
        if att == "Arn" and pid.startswith("/"):
            return [g["arn"] for g in client("logs").describe_log_groups(logGroupNamePrefix=pid)["logGroups"] if g["logGroupName"] == pid][0]
        raise KeyError(f"cannot resolve GetAtt {res}.{att}")


NO_VALUE = object()
# ECS API integers that template parameters hand over as strings.
INTS = {"memory", "memoryReservation", "stopTimeout", "containerPort", "hostPort", "interval", "timeout", "retries",
        "startPeriod", "desiredCount", "minimumHealthyPercent", "maximumPercent", "healthCheckGracePeriodSeconds"}


def api_shape(v, key=None):
    """CloudFormation properties (PascalCase) as ECS API arguments (camelCase); log driver
    options keep their keys."""
    if isinstance(v, list):
        return [api_shape(x, key) for x in v]
    if isinstance(v, dict):
        if key == "options":
            return dict(v)
        out = {}
        for k, x in v.items():
            k2 = k[0].lower() + k[1:]
            k2 = {"awsvpcConfiguration": "awsvpcConfiguration", "enable": "enable"}.get(k2, k2)
            out[k2] = api_shape(x, k2)
        if "deploymentCircuitBreaker" in out:
            out["deploymentCircuitBreaker"].setdefault("rollback", True)
        return out
    if key in INTS and isinstance(v, str) and v.isdigit():
        return int(v)
    if key in ("assignPublicIp",) or not isinstance(v, bool):
        return v
    return v


def wait_stack(cf, stack, verbs):
    deadline = time.time() + 600
    while True:
        s = cf.describe_stacks(StackName=stack)["Stacks"][0]
        status = s["StackStatus"]
        if status.endswith("_COMPLETE") and not status.endswith("ROLLBACK_COMPLETE"):
            return s
        if "FAILED" in status or "ROLLBACK" in status:
            events = cf.describe_stack_events(StackName=stack)["StackEvents"]
            reasons = [f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason')}" for e in events if "FAILED" in e["ResourceStatus"]]
            sys.exit(f"stack {stack} {verbs} failed: {status}\n" + "\n".join(reasons[:10]))
        if time.time() > deadline:
            sys.exit(f"stack {stack}: still {status} after 600 s")
        time.sleep(1)


def local(args):
    sam = load_sam(args.template)
    params = {}
    for kv in args.param:
        k, _, v = kv.partition("=")
        params[k] = v
    for k, v in default_network(client("ec2")).items():
        params.setdefault(k, v)
    upload_code(sam, args.lambda_dir, args.stack)
    cfn = expand(sam)
    if args.out:
        # The whole expanded template, as AWS would receive it (before the emulator's shim).
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(cfn, f, indent=1, sort_keys=True)
    shim = Shim(args.stack, copy.deepcopy(cfn), params)
    body = json.dumps(shim.provision(), separators=(",", ":"), sort_keys=True)
    cf = client("cloudformation")
    request = dict(
        StackName=args.stack,
        TemplateBody=body,
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in sorted(params.items())],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
    )
    try:
        existing = cf.describe_stacks(StackName=args.stack)["Stacks"][0]["StackStatus"]
    except botocore.exceptions.ClientError:
        existing = None
    if existing and existing.endswith("_IN_PROGRESS"):
        sys.exit(f"stack {args.stack} is {existing}: wait for it, or delete it")
    if existing is None or existing == "ROLLBACK_COMPLETE":
        if existing:
            cf.delete_stack(StackName=args.stack)
        log(f"creating stack {args.stack} at {os.environ.get('AWS_ENDPOINT_URL')}")
        cf.create_stack(**request)
        stack = wait_stack(cf, args.stack, "create")
    else:
        log(f"stack {args.stack} exists ({existing}); updating it")
        try:
            cf.update_stack(**request)
        except botocore.exceptions.ClientError as e:
            if "No updates are to be performed" not in str(e):
                raise
            log("no changes")
        stack = wait_stack(cf, args.stack, "update")
    shim.finish()
    stack = cf.describe_stacks(StackName=args.stack)["Stacks"][0]
    log(f"stack {args.stack}: {stack['StackStatus']}")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    for k, v in sorted(outputs.items()):
        print(f"{k}={v}")
    if args.outputs_json:
        with open(args.outputs_json, "w") as f:
            json.dump(outputs, f, indent=1, sort_keys=True)


def outputs_of(stack):
    s = client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in s.get("Outputs", [])}


def migrate(args):
    out = outputs_of(args.stack)
    ecs = client("ecs")
    task = ecs.run_task(
        cluster=out["ClusterName"],
        taskDefinition=f"{args.stack}-worker",
        launchType="FARGATE",
        count=1,
        networkConfiguration={
            "awsvpcConfiguration": {
                "subnets": out["PrivateSubnetIds"].split(","),
                "securityGroups": [out["WorkerSecurityGroupId"]],
                "assignPublicIp": "DISABLED",
            }
        },
        overrides={"containerOverrides": [{"name": "worker", "command": ["migrate"]}]},
    )
    if task.get("failures"):
        sys.exit(f"chronos migrate could not start: {task['failures']}")
    arn = task["tasks"][0]["taskArn"]
    log(f"chronos migrate running as {arn}")
    ecs.get_waiter("tasks_stopped").wait(cluster=out["ClusterName"], tasks=[arn], WaiterConfig={"Delay": 6, "MaxAttempts": 100})
    t = ecs.describe_tasks(cluster=out["ClusterName"], tasks=[arn])["tasks"][0]
    code = t["containers"][0].get("exitCode")
    if code != 0:
        sys.exit(f"chronos migrate exited {code}: {t.get('stoppedReason')} (logs: /chronos/{args.stack}/workers)")
    log("migrations applied")


def overrides(args):
    current = {}
    if os.path.exists(args.config):
        with open(args.config, "rb") as f:
            conf = tomllib.load(f)
        raw = conf.get("default", {}).get("deploy", {}).get("parameters", {}).get("parameter_overrides", "")
        items = raw if isinstance(raw, list) else shlex.split(raw)
        for kv in items:
            k, _, v = kv.partition("=")
            current[k] = v
    for kv in args.set:
        k, _, v = kv.partition("=")
        current[k] = v
    print(" ".join(shlex.quote(f"{k}={v}") for k, v in current.items()))


def dev_ecs(args):
    ecs = client("ecs")
    if args.show:
        s = ecs.describe_services(cluster=args.cluster, services=[args.service])["services"][0]
        print(f"{args.service}: desiredCount={s['desiredCount']} runningCount={s['runningCount']}")
        return
    ecs.create_cluster(clusterName=args.cluster)
    live = [s for s in ecs.describe_services(cluster=args.cluster, services=[args.service]).get("services", []) if s["status"] == "ACTIVE"]
    if live:
        return
    td = ecs.register_task_definition(
        family=args.service, requiresCompatibilities=["FARGATE"], networkMode="awsvpc", cpu="1024", memory="2048",
        containerDefinitions=[{"name": "worker", "image": "chronos", "command": ["worker"], "memory": 2048, "essential": True}],
    )["taskDefinition"]["taskDefinitionArn"]
    net = default_network(client("ec2"))
    sgs = client("ec2").describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [net["VpcId"]]}])["SecurityGroups"]
    ecs.create_service(
        cluster=args.cluster, serviceName=args.service, taskDefinition=td, desiredCount=1, launchType="FARGATE",
        networkConfiguration={"awsvpcConfiguration": {"subnets": net["PrivateSubnetIds"].split(",")[:1], "securityGroups": [sgs[0]["GroupId"]]}},
    )
    log(f"ECS service {args.service} in cluster {args.cluster} created on {os.environ.get('AWS_ENDPOINT_URL')}")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    lp = sub.add_parser("local")
    lp.add_argument("--template", required=True)
    lp.add_argument("--stack", required=True)
    lp.add_argument("--lambda-dir", required=True)
    lp.add_argument("--out", help="write the expanded (plain CloudFormation) template here")
    lp.add_argument("--outputs-json", help="write the stack's Outputs here")
    lp.add_argument("--param", action="append", default=[], help="K=V template parameter")
    mp = sub.add_parser("migrate")
    mp.add_argument("--stack", required=True)
    op = sub.add_parser("overrides")
    op.add_argument("--config", required=True)
    op.add_argument("set", nargs="*")
    dp = sub.add_parser("dev-ecs")
    dp.add_argument("--cluster", required=True)
    dp.add_argument("--service", required=True)
    dp.add_argument("--show", action="store_true")
    args = p.parse_args()
    {"local": local, "migrate": migrate, "overrides": overrides, "dev-ecs": dev_ecs}[args.cmd](args)


if __name__ == "__main__":
    main()

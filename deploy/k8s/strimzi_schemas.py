"""JSON schemas of the Strimzi custom resources the manifests use, for kubeconform.

    python deploy/k8s/strimzi_schemas.py           # build (once) and print the schema directory
    python deploy/k8s/strimzi_schemas.py --out DIR # build into DIR

Strimzi ships its CRDs as release files, not through a package registry; its model classes
(io.strimzi:api) and its CRD generator are on Maven Central, so Maven copies both
(deploy/k8s/strimzi/pom.xml) and the generator writes the CRDs the way Strimzi's own build does.
Each CRD version's openAPIV3Schema then becomes a strict JSON schema at
<out>/<group>/<kind>_<version>.json, the path kubeconform's template
`{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json` names. The result is cached
under .cache/strimzi-schemas/, keyed by the pom and this file, so Maven and Java run once.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
POM = Path(__file__).resolve().parent / "strimzi" / "pom.xml"
CACHE = ROOT / ".cache" / "strimzi-schemas"
MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
GENERATOR = "io.strimzi.crdgenerator.CrdGenerator"
API_VERSION = "v1beta2"
# Model class of each kind the manifests use.
MODELS = {
    "Kafka": "io.strimzi.api.kafka.model.kafka.Kafka",
    "KafkaNodePool": "io.strimzi.api.kafka.model.nodepool.KafkaNodePool",
    "KafkaTopic": "io.strimzi.api.kafka.model.topic.KafkaTopic",
}


def to_json_schema(node: Any) -> Any:
    """A Kubernetes structural (OpenAPI v3) schema as a strict JSON schema (pure)."""
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties"):
            out[key] = {name: to_json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not", "anyOf", "oneOf", "allOf"):
            out[key] = to_json_schema(value)
        elif key.startswith("x-kubernetes-") or key == "nullable":
            continue  # Kubernetes extensions, translated below
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"] if isinstance(out["type"], str) else [*out["type"], "null"]
    # Strict, like kubeconform -strict on built-in kinds: a misspelt field is an error, except
    # where the CRD keeps unknown fields on purpose (the free-form Kafka `config` maps).
    if "properties" in out and "additionalProperties" not in out and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def crd_schemas(crd: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{'<kind>_<version>.json' (kind lower-case): JSON schema} for every version of one CRD."""
    kind = crd["spec"]["names"]["kind"].lower()
    return {
        f"{kind}_{version['name']}.json": to_json_schema(version["schema"]["openAPIV3Schema"])
        for version in crd["spec"]["versions"]
    }


def _digest() -> str:
    return hashlib.sha256(POM.read_bytes() + Path(__file__).read_bytes()).hexdigest()[:16]


def _run(cmd: list[str], log: Path) -> None:
    with open(log, "ab") as out:
        result = subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"{cmd[0]} failed (exit {result.returncode}); last lines of {log}:\n{tail}")


def build(out: Path, work: Path) -> None:
    """Fetch the jars, generate the CRDs and write the JSON schemas under `out`."""
    mvn, java = shutil.which("mvn"), shutil.which("java")
    if mvn is None or java is None:
        raise RuntimeError("Maven and Java 17+ are needed to build the Strimzi schemas (Debian: maven, openjdk-17-jre-headless)")
    libs, crds, log = work / "lib", work / "crds", work / "build.log"
    shutil.rmtree(work, ignore_errors=True)
    crds.mkdir(parents=True)
    _run(
        [mvn, "-B", "-ntp", "-q", "-Dstyle.color=never", "-f", str(POM),
         f"{MAVEN_DEPENDENCY_PLUGIN}:copy-dependencies", f"-DoutputDirectory={libs}"],
        log,
    )
    targets = [f"{model}={crds / (kind.lower() + '.yaml')}" for kind, model in MODELS.items()]
    _run([java, "-cp", f"{libs}/*", GENERATOR, "--yaml", "--crd-api-version", "v1", "--api-versions", API_VERSION, *targets], log)
    for path in sorted(crds.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text(encoding="utf-8"))
        group = out / crd["spec"]["group"]
        group.mkdir(parents=True, exist_ok=True)
        for name, schema in crd_schemas(crd).items():
            (group / name).write_text(json.dumps(schema, indent=1, sort_keys=True), encoding="utf-8")


def ensure_schemas() -> Path:
    """The cached schema directory, built first if missing or made from another pom or converter."""
    home = CACHE / _digest()
    schemas, marker = home / "schemas", home / ".complete"
    if marker.is_file():
        return schemas
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test processes: one builds, the others wait
        if not marker.is_file():
            shutil.rmtree(schemas, ignore_errors=True)
            build(schemas, home / "work")
            marker.write_text(f"{POM.name} {_digest()}\n")
    return schemas


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the schemas here instead of the cache")
    args = parser.parse_args(argv)
    if args.out:
        build(args.out, args.out.with_name(args.out.name + ".work"))
        print(args.out)
    else:
        print(ensure_schemas())
    return 0


if __name__ == "__main__":
    sys.exit(main())

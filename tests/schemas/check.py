"""Check in-toto statements (a JSON array from `strata inspect --attestations`) against
the in-toto v1 statement schema and, for SLSA provenance, the SLSA v1 predicate schema;
offline (the schemas are the files beside this one). Exits 1 naming every violation."""
import json, pathlib, sys
import jsonschema
from referencing import Registry, Resource

here = pathlib.Path(__file__).parent
schemas = {n: json.loads((here / n).read_text()) for n in ("in-toto-statement-v1.json", "slsa-provenance-v1.json")}
registry = Registry().with_resources(
    [(s["$id"], Resource.from_contents(s)) for s in schemas.values()]
    + [(n, Resource.from_contents(s)) for n, s in schemas.items()])
fmt = jsonschema.Draft202012Validator.FORMAT_CHECKER
statement = jsonschema.Draft202012Validator(schemas["in-toto-statement-v1.json"], registry=registry, format_checker=fmt)
provenance = jsonschema.Draft202012Validator(schemas["slsa-provenance-v1.json"], registry=registry, format_checker=fmt)
errors, checked = [], 0
for item in json.load(open(sys.argv[1])):
    s = item["statement"]
    errors += [f"statement: {e.json_path}: {e.message}" for e in statement.iter_errors(s)]
    if s.get("predicateType") == "https://slsa.dev/provenance/v1":
        errors += [f"provenance: {e.json_path}: {e.message}" for e in provenance.iter_errors(s.get("predicate"))]
    checked += 1
print(f"checked {checked} statements")
for e in errors:
    print(e)
sys.exit(1 if errors or checked == 0 else 0)

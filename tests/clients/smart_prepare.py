"""fhirclient's prepare() against a fhirstream tenant base: prints the OAuth
endpoints it discovered, as JSON. Run by tests/access_control.rs when
FHIRSTREAM_TEST_FHIRCLIENT names a Python with fhirclient installed."""
import json
import sys

from fhirclient import client

smart = client.FHIRClient(settings={"app_id": "fhirstream-test", "api_base": sys.argv[1]})
smart.prepare()
auth = smart.server.auth
print(json.dumps({
    "auth": type(auth).__name__,
    "authorize": getattr(auth, "_authorize_uri", None),
    "token": getattr(auth, "_token_uri", None),
}))

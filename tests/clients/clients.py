"""Real FHIR clients against a running fhirstream: fhirpy, fhirclient and
fhir-kindling, each through its documented CRUD, search, conditional and
transaction calls. Run by tests/real_clients.rs with the base URL and a
bearer token; any failed expectation raises and exits non-zero.

Usage: python clients.py BASE_URL TOKEN
"""
import sys
import uuid

BASE, TOKEN = sys.argv[1], sys.argv[2]
RUN = uuid.uuid4().hex[:8]
FAMILY = f"Kindly{RUN}"


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok  {what}")


def with_fhirpy():
    from fhirpy import SyncFHIRClient
    from fhirpy.base.exceptions import OperationOutcome, ResourceNotFound

    client = SyncFHIRClient(BASE, authorization=f"Bearer {TOKEN}")
    p = client.resource("Patient", name=[{"family": FAMILY}], gender="female",
                        identifier=[{"system": "urn:fhirpy", "value": RUN}])
    p.save()
    check(p.id is not None and p["meta"]["versionId"] == "1", "fhirpy: create assigns an id and version 1")
    found = client.resources("Patient").search(family=FAMILY).fetch_all()
    check(len(found) == 1 and found[0].id == p.id, "fhirpy: search finds it")
    check(client.resources("Patient").search(family=FAMILY).count() == 1, "fhirpy: count() reads the total")
    p["birthDate"] = "1990-02-03"
    p.save()
    check(p["meta"]["versionId"] == "2", "fhirpy: save() of an existing resource updates it")
    fetched = client.reference("Patient", p.id).to_resource()
    check(fetched["birthDate"] == "1990-02-03", "fhirpy: read returns the update")
    # get_or_create sends POST /Patient?identifier=...; fhirstream refuses
    # the query string rather than ignoring it (a duplicate otherwise).
    try:
        client.resources("Patient").search(identifier=f"urn:fhirpy|{RUN}").get_or_create(
            client.resource("Patient", identifier=[{"system": "urn:fhirpy", "value": RUN}]))
        check(False, "fhirpy: get_or_create is refused, not silently duplicated")
    except OperationOutcome as e:
        check("If-None-Exist" in str(e), "fhirpy: get_or_create is refused with a pointer to If-None-Exist")
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:" + str(uuid.uuid4()), "resource": {"resourceType": "Patient", "name": [{"family": FAMILY}]},
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"family={FAMILY}&gender=female"}},
        {"request": {"method": "GET", "url": f"Patient?family={FAMILY}"}},
    ]}
    reply = client.execute("", method="post", data=bundle)
    check(reply["entry"][0]["response"]["status"].startswith("200"), "fhirpy: a conditional create in a transaction finds the match")
    check(reply["entry"][1]["resource"]["total"] == 1, "fhirpy: a search entry answers with a searchset")
    invalid = client.resource("Patient", gender="robot")
    try:
        invalid.save()
        check(False, "fhirpy: an invalid resource is refused")
    except OperationOutcome as e:
        check("gender" in str(e), "fhirpy: an invalid resource is refused naming the element")
    other = client.resource("Patient", name=[{"family": "Gone" + RUN}])
    other.save()
    other.delete()
    try:
        client.reference("Patient", other.id).to_resource()
        check(False, "fhirpy: a deleted resource is gone")
    except (ResourceNotFound, OperationOutcome):
        check(True, "fhirpy: a deleted resource is gone")
    return p.id


def with_fhirclient(patient_id):
    from fhirclient import client
    from fhirclient.models.observation import Observation
    from fhirclient.models.patient import Patient

    smart = client.FHIRClient(settings={"app_id": "fhirstream-test", "api_base": BASE})
    smart.server.session.headers["Authorization"] = f"Bearer {TOKEN}"
    p = Patient.read(patient_id, smart.server)
    check(p.birthDate.isostring == "1990-02-03", "fhirclient: read parses the resource strictly")
    found = Patient.where(struct={"family": FAMILY}).perform_resources(smart.server)
    check(len(found) >= 1 and all(isinstance(r, Patient) for r in found), "fhirclient: a searchset parses strictly")
    obs = Observation({"status": "final", "code": {"text": "weight"}, "subject": {"reference": f"Patient/{patient_id}"},
                       "valueQuantity": {"value": 70, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"}})
    created = obs.create(smart.server)
    check(created is not None and created.get("id"), "fhirclient: create returns the stored resource")
    listed = Observation.where(struct={"subject": f"Patient/{patient_id}"}).perform_resources(smart.server)
    check(len(listed) == 1 and listed[0].valueQuantity.value == 70, "fhirclient: search by reference parses")


def with_fhir_kindling():
    from fhir_kindling import FhirServer

    server = FhirServer(api_address=BASE, token=TOKEN)
    response = server.add({"resourceType": "Patient", "name": [{"family": FAMILY + "k"}]})
    check(response.resource_id is not None, "fhir-kindling: add parses Location with its version")
    result = server.query("Patient").where(field="family", operator="eq", value=FAMILY + "k").all()
    check(len(result.resources) == 1, "fhir-kindling: a query finds the resource")


if __name__ == "__main__":
    pid = with_fhirpy()
    with_fhirclient(pid)
    with_fhir_kindling()
    print("all clients passed")

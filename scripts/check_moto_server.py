"""Checks scripts/moto_server.py's transactions against the moto server it runs (under
scripts/with-moto.sh, which sets AWS_ENDPOINT_URL): a TransactWriteItems call that fails
leaves every item it named as it was (an update, a put of a new item, a delete), one that
succeeds applies them all, and an item the call did not name is left alone either way.
`make test-aws` runs it before the Rust tests that rely on it."""

import os
import sys

import boto3
from botocore.exceptions import ClientError

db = boto3.client("dynamodb", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
TABLE = "moto-server-check"
db.create_table(
    TableName=TABLE,
    KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
    AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
    BillingMode="PAY_PER_REQUEST",
)


def item(pk):
    return db.get_item(TableName=TABLE, Key={"pk": {"S": pk}}, ConsistentRead=True).get("Item")


def put(pk, v):
    db.put_item(TableName=TABLE, Item={"pk": {"S": pk}, "v": {"N": str(v)}})


put("updated", 1)
put("deleted", 1)
put("bystander", 1)
put("guard", 1)


def transaction(guard):
    return db.transact_write_items(
        TransactItems=[
            {"Update": {"TableName": TABLE, "Key": {"pk": {"S": "updated"}},
                        "UpdateExpression": "SET v = :two",
                        "ExpressionAttributeValues": {":two": {"N": "2"}}}},
            {"Put": {"TableName": TABLE, "Item": {"pk": {"S": "new"}, "v": {"N": "2"}},
                     "ConditionExpression": "attribute_not_exists(pk)"}},
            {"Delete": {"TableName": TABLE, "Key": {"pk": {"S": "deleted"}}}},
            {"ConditionCheck": {"TableName": TABLE, "Key": {"pk": {"S": "guard"}},
                                "ConditionExpression": "v = :v",
                                "ExpressionAttributeValues": {":v": {"N": str(guard)}}}},
        ]
    )


failures = []


def expect(what, got, want):
    if got != want:
        failures.append(f"{what}: got {got!r}, want {want!r}")


try:
    transaction(guard=7)
    failures.append("a transaction whose condition check fails was applied")
except ClientError as e:
    expect("error code", e.response["Error"]["Code"], "TransactionCanceledException")
expect("updated item after a failed call", item("updated"), {"pk": {"S": "updated"}, "v": {"N": "1"}})
expect("new item after a failed call", item("new"), None)
expect("deleted item after a failed call", item("deleted"), {"pk": {"S": "deleted"}, "v": {"N": "1"}})

transaction(guard=1)
expect("updated item after a call", item("updated"), {"pk": {"S": "updated"}, "v": {"N": "2"}})
expect("new item after a call", item("new"), {"pk": {"S": "new"}, "v": {"N": "2"}})
expect("deleted item after a call", item("deleted"), None)
expect("an item not named", item("bystander"), {"pk": {"S": "bystander"}, "v": {"N": "1"}})
db.delete_table(TableName=TABLE)

if failures:
    print("moto_server.py transactions:", *failures, sep="\n  ", file=sys.stderr)
    sys.exit(1)
print("moto_server.py: a failed transaction leaves the items it named as they were; a call applies them all")

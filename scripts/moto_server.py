"""moto's server, with DynamoDB transactions rolled back item by item, and SQS's retention
check reading the one attribute it needs.

moto 5.2.5 backs up a `TransactWriteItems` call by deep-copying every table it names, once
per item, and on failure puts those copies back (moto/dynamodb/models/__init__.py,
`DynamoDBBackend.transact_write_items`). Two things follow, neither of them DynamoDB's:

- each call costs time in proportion to the whole table: with a few thousand items the
  emulator, not the code under test, is what a long fault-injection run measures
  (`make chaos`: 57% of moto's time in those copies, py-spy);
- a call that fails puts back the whole table as it was when the call began, erasing what
  other requests wrote meanwhile (moto serves requests on threads).

Here a call backs up only the items it names and, if it fails, restores only those, with the
same effect on them as moto's own rollback.

A receive checks each message it looks at against the queue's retention period, which moto
reads by computing every attribute of the queue, its approximate counts included: a walk of
every message, once per message, so a receive from a queue of n messages costs n² (55% of
moto's time in `make chaos` with a thousand delayed messages). Here it reads that one
attribute. Everything else is moto as installed. Run as
`python scripts/moto_server.py -H 127.0.0.1 -p PORT` (scripts/with-moto.sh does).
"""

import copy
import sys
import threading

import moto.dynamodb.models as dynamodb_models
from moto.dynamodb.models import DynamoDBBackend
from moto.core.utils import unix_time
from moto.dynamodb.models.table import Table
from moto.server import main
from moto.sqs.models import SQSBackend

_in_transaction = threading.local()
_moto_transact = DynamoDBBackend.transact_write_items


class _CopyWithoutTables:
    """`copy` as moto's DynamoDB backend sees it: a table is not copied while this thread is
    inside a transaction (the wrapper below backs up its items instead); all else is."""

    def __getattr__(self, name):
        return getattr(copy, name)

    @staticmethod
    def deepcopy(value, memo=None):
        if isinstance(value, Table) and getattr(_in_transaction, "active", False):
            return value
        return copy.deepcopy(value, memo)


def _key_of(table, op_type, op):
    if op_type == "Put":
        attrs = op["Item"]
        key = {table.hash_key_attr: attrs[table.hash_key_attr]}
        if table.range_key_attr is not None:
            key[table.range_key_attr] = attrs[table.range_key_attr]
        return key
    return op["Key"]


def _put_back(table, hash_key, range_key, item):
    if item is None:
        table.delete_item(hash_key, range_key)
    elif range_key is not None:
        table.items[hash_key][range_key] = item
    else:
        table.items[hash_key] = item


def transact_write_items(self, transact_items):
    backups = []
    for transact_item in transact_items:
        try:
            op_type, op = next(iter(transact_item.items()))
            table = self.tables.get(op.get("TableName"))
            if table is None:
                continue
            hash_key, range_key = self.get_keys_value(table, _key_of(table, op_type, op))
        except Exception:  # moto's own validation answers this request
            continue
        before = table.get_item(hash_key, range_key)
        backups.append((table, hash_key, range_key, copy.deepcopy(before)))
    _in_transaction.active = True
    try:
        return _moto_transact(self, transact_items)
    except Exception:
        for table, hash_key, range_key, before in reversed(backups):
            _put_back(table, hash_key, range_key, before)
        raise
    finally:
        _in_transaction.active = False


def is_message_valid_based_on_retention_period(self, queue_name, message):
    queue = self.get_queue(queue_name)
    retention = int(queue.message_retention_period)
    return retention + message.sent_timestamp / 1000 > unix_time()


dynamodb_models.copy = _CopyWithoutTables()
DynamoDBBackend.transact_write_items = transact_write_items
SQSBackend.is_message_valid_based_on_retention_period = is_message_valid_based_on_retention_period

if __name__ == "__main__":
    sys.exit(main())

"""The database refuses a customer hierarchy deeper than one level, so no customer is its own ancestor.

A CHECK constraint cannot look at other rows, so this is a trigger (PostgreSQL and SQLite).
"""

from django.db import migrations

POSTGRES_CREATE = """
CREATE OR REPLACE FUNCTION billing_customer_one_level() RETURNS trigger AS $$
BEGIN
    IF NEW.parent_id IS NOT NULL THEN
        -- Lock the parent so two concurrent re-parentings cannot form a cycle.
        PERFORM 1 FROM billing_customer WHERE id = NEW.parent_id FOR UPDATE;
        IF EXISTS (SELECT 1 FROM billing_customer WHERE id = NEW.parent_id AND parent_id IS NOT NULL) THEN
            RAISE EXCEPTION 'customer hierarchy: the parent is itself a branch'
                USING ERRCODE = 'check_violation';
        END IF;
        IF EXISTS (SELECT 1 FROM billing_customer WHERE parent_id = NEW.id) THEN
            RAISE EXCEPTION 'customer hierarchy: a customer with branches cannot be a branch'
                USING ERRCODE = 'check_violation';
        END IF;
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER billing_customer_one_level
    BEFORE INSERT OR UPDATE OF parent_id ON billing_customer
    FOR EACH ROW EXECUTE FUNCTION billing_customer_one_level();
"""
POSTGRES_DROP = """
DROP TRIGGER IF EXISTS billing_customer_one_level ON billing_customer;
DROP FUNCTION IF EXISTS billing_customer_one_level();
"""

SQLITE_CREATE = [
    """
    CREATE TRIGGER billing_customer_one_level_insert BEFORE INSERT ON billing_customer
    WHEN NEW.parent_id IS NOT NULL
     AND EXISTS (SELECT 1 FROM billing_customer WHERE id = NEW.parent_id AND parent_id IS NOT NULL)
    BEGIN SELECT RAISE(ABORT, 'customer hierarchy: the parent is itself a branch'); END;
    """,
    """
    CREATE TRIGGER billing_customer_one_level_update BEFORE UPDATE OF parent_id ON billing_customer
    WHEN NEW.parent_id IS NOT NULL
     AND (EXISTS (SELECT 1 FROM billing_customer WHERE id = NEW.parent_id AND parent_id IS NOT NULL)
          OR EXISTS (SELECT 1 FROM billing_customer WHERE parent_id = NEW.id))
    BEGIN SELECT RAISE(ABORT, 'customer hierarchy: one level only'); END;
    """,
]
SQLITE_DROP = [
    "DROP TRIGGER IF EXISTS billing_customer_one_level_insert;",
    "DROP TRIGGER IF EXISTS billing_customer_one_level_update;",
]


def create_guard(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    statements = {"postgresql": [POSTGRES_CREATE], "sqlite": SQLITE_CREATE}.get(vendor, [])
    for sql in statements:
        schema_editor.execute(sql)


def drop_guard(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    statements = {"postgresql": [POSTGRES_DROP], "sqlite": SQLITE_DROP}.get(vendor, [])
    for sql in statements:
        schema_editor.execute(sql)


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]

    operations = [migrations.RunPython(create_guard, drop_guard)]

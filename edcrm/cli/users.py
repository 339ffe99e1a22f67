"""`flask edcrm seed-demo | create-user | create-token`."""

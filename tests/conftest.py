pytest_plugins = ["tests.fixtures.postgres", "tests.fixtures.stores", "tests.fixtures.prometheus"]

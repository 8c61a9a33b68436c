"""Collection order for `make test` on several workers (pytest-xdist, --dist loadfile): files that hold slow tests
run first, so the many short unit-test files fill the end of the run and no worker is left with a long end-to-end
file while the others idle. Files stay whole and keep their own order."""


def pytest_collection_modifyitems(config, items):
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: the order within each group is kept

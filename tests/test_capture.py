"""Safe capture: values shown by value and bounded, user objects as placeholders, secrets hidden."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st
from samples import shapes

from flowtrace_otel import TraceSession, config
from flowtrace_otel.capture import Capturer, exception_message


class Spy:
    """Counts every call of the dunders that capture must never run."""

    calls = 0

    def __repr__(self) -> str:
        Spy.calls += 1
        return "Spy()"

    def __str__(self) -> str:
        Spy.calls += 1
        return "spy"

    def __len__(self) -> int:
        Spy.calls += 1
        return 1

    def __iter__(self):
        Spy.calls += 1
        return iter(())

    def __eq__(self, other: object) -> bool:
        Spy.calls += 1
        return False

    __hash__ = object.__hash__

    @property  # type: ignore[misc]
    def __class__(self):  # a lying __class__ must not be read either
        Spy.calls += 1
        return int


class Order(Spy):
    pass


class CallableSpy(Spy):
    def __call__(self) -> None:
        Spy.calls += 1


class SneakyList(list):
    def __repr__(self) -> str:
        Spy.calls += 1
        return "sneaky"


class Exploding:
    def __repr__(self) -> str:
        raise RuntimeError("repr ran")


def take(order, items=None):
    return order


def login(user, password, api_key="k", **extra):
    return user


def test_user_objects_are_placeholders_without_running_their_code() -> None:
    Spy.calls = 0
    capture = Capturer()
    assert capture(Order()) == "<Order>"
    assert capture([Order(), {"o": Order()}]) == "[<Order>, {'o': <Order>}]"
    assert capture(SneakyList([1])) == "<SneakyList>"
    assert capture(Exploding()) == "<Exploding>"
    assert Spy.calls == 0


def test_traced_arguments_and_results_never_run_user_repr() -> None:
    Spy.calls = 0
    with TraceSession() as session:
        take(Order(), items=[Order()])
    [event] = session.events
    assert event.args_repr == "<Order>, [<Order>]"
    assert event.result_repr == "<Order>"
    assert Spy.calls == 0


def test_full_repr_is_opt_in() -> None:
    Spy.calls = 0
    capture = Capturer(full_repr=True)
    assert capture(Order()) == "Spy()"
    assert Spy.calls == 1
    assert capture(Exploding()) == "<Exploding>"  # a failing repr still never raises


def test_strings_and_bytes_are_cut_to_max_repr() -> None:
    capture = Capturer(max_repr=10)
    assert capture("abcdefghijklmnop") == "'abcdefgh…"
    assert len(capture("x" * 10_000)) == 10
    assert capture(b"abcdefghijklmnop") == "b'abcdefg…"
    assert capture("short") == "'short'"


def test_containers_are_cut_by_items_and_depth() -> None:
    capture = Capturer(max_items=3)
    assert capture(list(range(10))) == "[0, 1, 2, ...+7]"
    assert capture({i: i for i in range(5)}) == "{0: 0, 1: 1, 2: 2, ...+2}"
    assert capture((1,)) == "(1,)"
    assert capture(set()) == "set()" and capture(frozenset()) == "frozenset()"
    assert capture(frozenset({1})) == "frozenset({1})"
    assert capture([[[[[1]]]]]) == "[[[<list len=1>]]]"


def test_self_referencing_containers() -> None:
    capture = Capturer()
    items: list[object] = [1]
    items.append(items)
    assert capture(items) == "[1, ...]"
    table: dict[str, object] = {}
    table["me"] = table
    assert capture(table) == "{'me': ...}"
    shared = [0]
    assert capture([shared, shared]) == "[[0], [0]]"  # repeated is not recursive


def test_huge_int_is_not_converted() -> None:
    capture = Capturer()
    assert capture(2**200) == repr(2**200)
    assert capture(10**100) == "<int 333 bits>"
    assert capture(10**100_000) == "<int 332193 bits>"
    assert capture(-(2**300)) == "<int 301 bits>"


def test_scalars_functions_classes_modules() -> None:
    capture = Capturer()
    assert [capture(v) for v in (None, True, 1.5, 2j, range(3), ...)] == [
        "None", "True", "1.5", "2j", "range(0, 3)", "Ellipsis"]
    assert capture(take) == "<function take>"
    assert capture(len) == "<function len>"
    assert capture(Order) == "<class Order>"
    assert capture(shapes) == "<module samples.shapes>"
    assert capture(ValueError("x")) == "<ValueError>"


def test_callables_are_named_without_running_user_code() -> None:
    import types

    Spy.calls = 0
    capture = Capturer()
    assert capture(types.MethodType(CallableSpy(), object())) == "<CallableSpy>"
    assert capture(Order().__repr__) == "<function Spy.__repr__>"
    assert capture(Order().__sizeof__) == "<function Order.__sizeof__>"
    assert capture([].append) == "<function list.append>"
    assert capture(dict.fromkeys) == "<function dict.fromkeys>"
    assert capture(print) == "<function print>"
    assert Spy.calls == 0


def test_secret_parameters_are_redacted() -> None:
    with TraceSession() as session:
        login("ann", "hunter2", api_key="abc", token="t0k", note="fine")
    [event] = session.events
    assert "hunter2" not in event.args_repr and "abc" not in event.args_repr
    assert "t0k" not in event.args_repr
    assert event.args_repr == (
        "'ann', [REDACTED], [REDACTED], **{'token': [REDACTED], 'note': 'fine'}")


def test_dict_keys_redacted_the_same_way_every_time() -> None:
    capture = Capturer(redact=("secret",))
    for _ in range(3):
        assert capture({"MySecret": 1, "plain": 2}) == "{'MySecret': [REDACTED], 'plain': 2}"
    assert Capturer()({"MySecret": 1}) == "{'MySecret': 1}"  # no words: nothing hidden


def test_redaction_words_are_configurable() -> None:
    config(redact=("note",))
    with TraceSession() as session:
        login("ann", "hunter2", note="hidden")
    args = session.events[0].args_repr
    assert "hunter2" in args and "hidden" not in args


def test_capture_off() -> None:
    with TraceSession(capture_args=False, capture_result=False) as session:
        shapes.double(21)
    [event] = session.events
    assert (event.args, event.args_repr, event.result_repr) == ([], "", None)


def test_exception_messages_never_run_user_str() -> None:
    Spy.calls = 0

    class Custom(Exception):
        def __str__(self) -> str:
            Spy.calls += 1
            return "custom"

    capture = Capturer()
    assert exception_message(Custom("x"), capture) == "<message not captured: custom __str__>"
    assert exception_message(ValueError(Order()), capture) == "<Order>"
    assert exception_message(KeyError("k"), capture) == "'k'"
    assert exception_message(OSError(2, "gone"), capture) == "[Errno 2] gone"
    assert len(exception_message(ValueError("m" * 10_000), capture)) == 4 * 80
    assert Spy.calls == 0


builtin_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
    lambda inner: st.lists(inner) | st.tuples(inner, inner) | st.dictionaries(st.text(), inner)
    | st.frozensets(st.integers()),
    max_leaves=30,
)


@settings(max_examples=150, deadline=None)
@given(builtin_values, st.integers(min_value=0, max_value=200), st.integers(0, 20))
def test_capture_is_bounded_and_never_raises(value, max_repr, max_items) -> None:
    text = Capturer(max_repr=max_repr, max_items=max_items)(value)
    assert isinstance(text, str)
    assert len(text) <= max(max_repr, 4)


nested_values = st.recursive(
    st.none() | st.integers() | st.text(max_size=30) | st.binary(max_size=10),
    lambda inner: st.lists(inner, max_size=12) | st.tuples(inner) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=12) | st.integers(), inner, max_size=12)
    | st.frozensets(st.integers(), max_size=5) | st.sets(st.text(max_size=5), max_size=5),
    max_leaves=60,
)


@settings(max_examples=300, deadline=None)
@given(nested_values, st.integers(min_value=0, max_value=120), st.integers(0, 12))
def test_early_stop_shows_what_the_full_rendering_cut_to_max_repr_shows(
        value, max_repr, max_items) -> None:
    """Containers stop rendering past max_repr; the text must not change because of it."""
    capture = Capturer(max_repr=max_repr, max_items=max_items, redact=("secret",))
    full = capture._text(value, 0, set(), 10**9)  # no early stop
    assert capture(value) == (full if len(full) <= capture.max_repr
                              else full[: capture.max_repr - 1] + "…")


def test_a_large_nested_argument_is_rendered_only_as_far_as_shown() -> None:
    """Only the first items of a big nested value are visited (the rest would be cut)."""
    visited = []

    class Probe(Capturer):
        __slots__ = ()

        def _text(self, value, depth, seen, room):  # type: ignore[no-untyped-def]
            visited.append(value)
            return super()._text(value, depth, seen, room)

    order = {"items": [{"sku": f"SKU-{i}", "qty": i} for i in range(8)], "id": 1}
    assert Probe(max_repr=40)(order) == "{'items': [{'sku': 'SKU-0', 'qty': 0}, …"
    assert len(visited) < 12  # the full rendering visits 36 values


class ItemByItem(Capturer):
    """The reference: every container rendered item by item, never by the builtin repr."""

    __slots__ = ()

    def _flat(self, value, kind):  # type: ignore[no-untyped-def]
        return False


flat_items = (st.none() | st.booleans() | st.integers() | st.integers(-2**300, 2**300)
              | st.floats() | st.text(max_size=100) | st.binary(max_size=100)
              | st.sampled_from(["password", "api_key", "name", "Token"]))


@settings(max_examples=300, deadline=None)
@example(["x" * 10 + "'"], 10, 8)  # cut first, the string's repr takes other quotes
@example({"key": 2**257}, 80, 8)
@given(st.lists(flat_items, max_size=10) | st.tuples(flat_items)
       | st.dictionaries(flat_items, flat_items, max_size=10)
       | st.frozensets(st.integers(), max_size=10) | st.sets(st.text(max_size=90), max_size=10)
       | st.lists(st.lists(flat_items, max_size=3), max_size=3),
       st.integers(min_value=0, max_value=120), st.integers(0, 12))
def test_flat_containers_by_builtin_repr_read_as_item_by_item(value, max_repr,
                                                              max_items) -> None:
    """The builtin-repr shortcut for flat containers changes no text, secrets included."""
    options = {"max_repr": max_repr, "max_items": max_items, "redact": ("password", "key")}
    assert Capturer(**options)(value) == ItemByItem(**options)(value)

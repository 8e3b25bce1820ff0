"""Click event names read into their funnel stage by their words (Segment's e-commerce spec, Klaviyo-style names,
names run together): `seg_assets.ingest.events.stage_of`, pure."""

import pytest


@pytest.mark.parametrize("name, stage", [
    ("Product Added", "add_to_cart"), ("Cart Viewed", "other"), ("Product Viewed", "view"), ("Product List Viewed", "view"),
    ("Products Searched", "search"), ("Checkout Started", "checkout"), ("Order Completed", "purchase"),
])
def test_segments_ecommerce_event_names_land_in_their_stage(name, stage):
    from seg_assets.ingest.events import stage_of

    assert stage_of(name) == stage  # "Product Added" was a view and "Cart Viewed" an add to cart (keywords)


@pytest.mark.parametrize("name, stage", [
    # Klaviyo-style names: the verb before the noun; "review" holds "view", "Subscribed to List" holds "list"
    ("Placed Order", "purchase"), ("Ordered Product", "purchase"), ("Completed Order", "purchase"),
    ("Order Submitted", "purchase"), ("place_order", "purchase"), ("Viewed Product", "view"), ("Started Checkout", "checkout"),
    ("Added to Cart", "add_to_cart"), ("item_added", "add_to_cart"), ("scAdd", "add_to_cart"), ("Wrote Review", "other"),
    ("review_submitted", "other"), ("Subscribed to List", "other"), ("cart_view", "other"), ("Order Cancelled", "other"),
    ("purchase_refund", "other"), ("add_payment_info", "checkout"), ("Checked Out", "checkout"),
    ("productview", "view"), ("ordercomplete", "purchase"),  # run together: patterns inside the name
    # a purchase that failed is none, a completed checkout step is still checking out, "buy now" starts a checkout
    ("purchase_failed", "other"), ("Payment Declined", "other"), ("paymentfailed", "other"),
    ("Completed Checkout Step", "checkout"), ("checkout_step_2_completed", "checkout"), ("Buy Now Clicked", "checkout"),
    ("one_click_buy", "purchase"), ("buy_now_purchase_completed", "purchase"),
])
def test_event_names_are_read_by_their_words(name, stage):
    from seg_assets.ingest.events import stage_of

    assert stage_of(name) == stage


@pytest.mark.parametrize("name, stage", [
    # Shopify's web-pixel standard events: the four checkout steps end in "submitted", read as an order placed (one
    # order counted as five purchases, a tester's); Snowplow's time-on-page heartbeat is no page view
    ("checkout_contact_info_submitted", "checkout"), ("checkout_address_info_submitted", "checkout"),
    ("checkout_shipping_info_submitted", "checkout"), ("payment_info_submitted", "checkout"),
    ("Checkout Address Info Submitted", "checkout"), ("checkout_completed", "purchase"), ("checkout_started", "checkout"),
    ("search_submitted", "search"), ("product_added_to_cart", "add_to_cart"), ("collection_viewed", "view"),
    ("page_ping", "other"), ("Order Submitted", "purchase"),
    # ... but a contact form or a profile's details are no checkout step (a reviewer's: they became one with that fix)
    ("contact_form_submitted", "other"), ("contact_us_submitted", "other"), ("Contact Submitted", "other"),
    ("info_request_submitted", "other"), ("profile_info_completed", "other"), ("address_confirmed", "other"),
    ("account_details_confirmed", "view"), ("order_details_confirmed", "purchase"), ("order_info_submitted", "purchase"),
    ("card_details_submitted", "checkout"), ("Card Details Submitted", "checkout"), ("card_info_submitted", "checkout"),
])
def test_checkout_steps_submitted_are_checkout_and_a_page_ping_no_view(name, stage):
    from seg_assets.ingest.events import stage_of

    assert stage_of(name) == stage


def test_a_stage_guessed_from_the_words_and_a_latest_source_without_line_ids_are_said_in_the_refresh(tmp_path):
    """A tester's `wc_thankyou_page` beside GA4's `purchase` counted every order twice, unsaid (the stage came from
    the word "thankyou"); and a `keep: latest` source of order lines without a line id booked its refunds beside the
    paid lines, said only in the ledger. Both are warnings of the ingestion step; a declared name and a built-in one
    are not, and the UI's table says where each stage came from."""
    import dagster as dg

    from seg_assets.ingest import ingest_landing
    from seg_assets.resources import build_resources

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "sources.yaml").write_text(
        "sources:\n  web:\n    table: clicks\n    event_types: {newsletter_thankyou: other, Page Viewed Twice: view}\n"
        "  shop:\n    table: order_items\n    keep: latest\n")
    landing = tmp_path / "data" / "landing"
    (landing / "web").mkdir(parents=True)
    (landing / "shop").mkdir(parents=True)
    (landing / "web" / "a.csv").write_text(
        "event_id,user_id,session_id,event_ts,event_type\n"
        "e1,u1,s1,2026-03-01T10:00:00Z,purchase\ne2,u1,s1,2026-03-01T10:00:01Z,wc_thankyou_page\n"
        "e3,u1,s1,2026-03-01T10:00:02Z,newsletter_thankyou\ne4,u1,s1,2026-03-01T10:00:03Z,Page Viewed Twice\n")
    (landing / "shop" / "a.csv").write_text("order_id,user_id,order_ts,product_id,quantity,unit_price,status\n"
                                            "o1,u1,2026-03-01T10:00:00Z,p1,1,5,completed\n")
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([ingest_landing], resources=build_resources(tmp_path / "data", "2026-03-02T00:00:00Z"),
                            instance=instance)
    assert result.success
    said = " | ".join(r.user_message for r in instance.all_logs(result.run_id) if not r.is_dagster_event)
    assert "given a funnel stage by their words" in said and "wc_thankyou_page -> purchase (1 rows)" in said, said
    assert "newsletter_thankyou" not in said and "page viewed twice" not in said.lower() and "purchase (" not in said.replace(
        "wc_thankyou_page -> purchase (", "")
    assert "source 'shop' says keep: latest, but its files carry no line id" in said, said
    events = [m for m in result.asset_materializations_for_node("ingest_landing")
              if m.asset_key == dg.AssetKey(["raw", "clicks"])][0].metadata["events_by_name"]
    assert {(r.data["event_type"], r.data["stage_from"]) for r in events.value.records} == {
        ("purchase", "built in"), ("wc_thankyou_page", "words"), ("newsletter_thankyou", "declared"),
        ("Page Viewed Twice", "declared")}


def test_shopifys_pixel_events_are_built_in_with_the_stages_their_words_gave():
    """Their stages were right, but guessed from the words: a warning on every delivery of a Shopify shop."""
    from seg_assets.ingest.events import _SHOPIFY_PIXELS, BUILT_IN, _word_stage, stage_from, stage_of

    for name, stage in _SHOPIFY_PIXELS.items():
        assert stage_from(name) == BUILT_IN and stage_of(name) == stage, name
    assert {n for n, s in _SHOPIFY_PIXELS.items() if _word_stage(n) != s} <= {"alert_displayed", "ui_extension_errored"}

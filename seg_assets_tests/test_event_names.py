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

"""One real-looking open-tracking URL per vendor family: each is found by its vendor rule, in an
image without any declared size (so that no size heuristic helps), and the vendors' content
CDNs are left alone."""

from __future__ import annotations

import pytest

from relay.detect.trackers import DetectionRules
from relay.model import Purpose
from relay.rulefiles import load_rules
from tests.support.trackers import copy_detection_rules, detection_rules, only, run

VENDOR_URLS = [
    (
        "mailchimp-open",
        "https://bakery.us14.list-manage.com/track/open.php?u=c175257c9cc0965de7411804e&id=9dd9c537f4&e=5acb7218b8",
    ),
    (
        "mandrill-open",
        "https://mandrillapp.com/track/open.php?u=30504112&id=6f0e1d2c3b4a59687766554433221100",
    ),
    (
        "sendgrid-open",
        "https://u2236810.ct.sendgrid.net/wf/open?upn=8Xq0bT4mKp-2BzW9c1vR7yN3hL6aF5sD0gJ2kE8uI4oP",
    ),
    (
        "sendgrid-branded-open",
        "https://email.hello.example.com/ss/o/u001.Qh3Kz8bT1mPp9Wv2cR7yN4/4b1/Hn7LcPqRs2Tt4Uv6Wx8Yz0/ho.gif",
    ),
    (
        "mailgun-open",
        "https://email.mg.shopify-store.com/o/eJwPHLs0wOgU_VxpLROqD84nIYBJxJMWhrruaq1emelI4rLmRM5B",
    ),
    (
        "ses-open",
        "https://egirwome.r.eu-west-1.awstrack.me/I0/010001cb739bb641-0f0926b3-b782-d3cf-1fca-9f875c6f5b72-000000/R2t9GNcYpUiZIgW_M8PGjdeSPVMH=934",
    ),
    (
        "ses-custom-domain-open",
        "https://r.news.example.org/CI0/0102018c3d2e1f40-7a8b9c0d-1e2f-3a4b-5c6d-7e8f9a0b1c2d-000000/Kx8p2Lq9Zr4Tb7Nc1Vw5Ys3Ud6=352",
    ),
    (
        "sparkpost-open",
        "https://spgo.sparkpostmail.com/q/Hk3bW9xT2mP7vR1cN5yL8q~~/AAAAAQA~/RgRnB2xAPlcDc3BjQgpj",
    ),
    (
        "sparkpost-branded-open",
        "https://clicks.shop.example/q/Hk3bW9xT2mP7vR1cN5yL8q~~/AAQRxRA~/RgRnB2xAPlcDc3Bj",
    ),
    ("postmark-open", "https://ea.pstmrk.it/open?m=v3_1.Ab9cD8eF7gH6iJ5kL4mN3o.Pq2Rs1Tu0Vw9Xy8Zz7"),
    (
        "hubspot-sales-open",
        "https://t.sidekickopen65.com/e1t/o/5/qq3Lv6we2eMZ3zNOflVa8u5vhyQl8Xxb5wfFUw1zSltZ?si=7068564812232620&pi=37ea74e3",
    ),
    (
        "hubspot-sales-open",
        "https://t.signaux.com/e1t/o/5/W2nX8p4Kq9Lm3Zr7Tb1Nc5Vw?si=5122&pi=9f8e7d6c",
    ),
    (
        "hubspot-open",
        "https://t.hubspotlinks.example/e2t/to/VWqKzR5Lb2nHW4tXg6r8Kl0YpW5Fm0kN3Kq7Hd103",
    ),
    (
        "sfmc-open",
        "https://cl.s10.exct.net/open.aspx?ffcb10-fec31c7773660c7c-fe2411717c6c067d7d1773-fe9713727561007d76&d=100231&bmt=0",
    ),
    ("pardot-open", "https://info.example.com/r/861042/open/1?email=ana"),
    ("klaviyo-open", "https://trk.klaviyomail.com/sDxZuIRGWB5B4TWTWtBaJi7w1adpkn7e-znWtHAv/o.gif"),
    ("iterable-open", "https://links.iterable.com/s/eo/Xk2bT9L0qR5yPz3mVv8nZw/aB3dE5fG7h/21"),
    ("customerio-open", "https://track.customer.io/e/o/eyJlbWFpbF9pZCI6IkRmNmdBUUFCbG9nPSJ9"),
    (
        "braze-open",
        "https://ablink.mail.brand.example/ss/o/u001.Zx9Yw8Vu7Ts6Rq5Po4Nm3L/4kp/Ab1Cd2Ef3Gh4Ij5Kl6Mn7O/ho.gif",
    ),
    ("brevo-open", "https://x7d9f.r.af.d.sendibt2.com/tr/op/Ou9kY1bP7xE3mL5qT8wV2cN6zA4rS0hJ"),
    (
        "mailjet-open",
        "https://0b2c3.mjt.lu/oo/BAAAAKx3QmEAAAAAAAAAAQ7p0ZsAAYCsFlMAAAAAAAXAhQBkM2Jq/7f3e9a1c/e.gif",
    ),
    ("marketo-open", "https://na-ab12.marketo.example/trk?t=1&mid=MTMxLUFCQy0xMjMAAAGPq3k2n8Zx"),
    ("adobe-campaign-open", "https://t.news.brand.example/r/?id=h5a7b9c1d,2e4f6a8b,1"),
    (
        "eloqua-open",
        "https://s2048.t.en25.com/e/FooterImages/FooterImage1?elq=9f8e7d6c5b4a39281706&siteid=2048",
    ),
    (
        "responsys-open",
        "https://e.brand.example/pub/as?_ri_=X0Gzc2X%3DYQpglLjHJlYQGnzbjzfAzf6zbRzdWzf6zerQbo&_ei_=Eo1",
    ),
    ("bronto-open", "https://app.bm5150.com/t/o?n=9Yx2&m=c1d2e3f4a5"),
    (
        "acoustic-open",
        "https://links.mkt941.com/open/log/941/MTE0NTY4NzU4MAS2/S0/MTk4NzY1NDMyMQS2/1/0",
    ),
    ("campaign-monitor-open", "https://brand.createsend1.com/t/y-o-ujjdtl-l/o.gif"),
    (
        "constant-contact-open",
        "https://r20.rs6.net/on.jsp?ca=0b1c2d3e-4f5a&a=1104567890123&c=a1b2&ch=c3d4&o=https",
    ),
    (
        "emarsys-open",
        "https://link.brand.example/mo/X9kR2pLm4Tq_712345678_1234567_123456_1234567.gif",
    ),
    (
        "epsilon-open",
        "https://mail.brand.example/O/v70000018c9910d078a63fa06e966f45e9/f3c453e1bf2459d000005d6b53074bb2",
    ),
    (
        "selligent-open",
        "https://brand.emsecure.net/optiext/optiextension.dll?ID=Zq8mXw3LrT6yB1nV0cK9sA",
    ),
    (
        "whatcounts-open",
        "http://marketing.yourcentre.com.au/t?c=1109&r=6455&l=445&t=10&e=BD6A538E5E55F07F21769496C4BAD3DF",
    ),
    (
        "zoho-open",
        "https://zc1.maillist-manage.com/ua/Open?od=11287eca40c1a2&rd=166050c9d1b2&sd=166050c9d1&n=11699e4c",
    ),
    ("aweber-open", "https://openrate.aweber.com/y/?id=7c3e9a1f&m=d4b6f8a0&l=2b4d6f"),
    ("convertkit-open", "https://open.convertkit-mail2.com/l2u9r8p3k7s6x9z5qv4tmw3nbh2"),
    ("mailerlite-open", "https://clicks.mlsend.com/to/c/eyJ2IjoiMSIsImwiOiIxMjM0NSJ9"),
    (
        "substack-open",
        "https://email.mg1.substack.com/o/eJxNkM1uwyAQhJ8mPtrCgO34wMGJ0lNVqVIvPXWI2cRUGBCsY7tPX9K_RHvabzXDpDbL3G",
    ),
    ("shopify-open", "https://boutique.example.fr/tools/emails/open/7c2e1d9f-4a3b/5e6f7a8b9c"),
    ("intercom-open", "https://via.intercom.io/o?a=tx5qk2m9&t=8c3f5a1e8d2b"),
    ("litmus-open", "https://e3f2a1b0.emltrk.com/e3f2a1b0?d=ana@example.org"),
    ("email-on-acid-open", "https://a7Gk2LmQ9p.eoapxl.com/a7Gk2LmQ9p/4521022171135001432317022/P"),
    (
        "validity-open",
        "https://pixel.app.returnpath.net/pixel.gif?r=0a1b2c3d4e5f60718293a4b5c6d7e8f901234567&c=SPRING_SALE",
    ),
    (
        "liveintent-impression",
        "https://li.brand.example/imp?s=123456&li=news&e=ana@example.org&p=1700000000000",
    ),
    (
        "mailtrack-open",
        "https://mailtrack.io/trace/mail/3f2e1d0c9b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e.png?u=7654321",
    ),
    (
        "yesware-open",
        "https://t.yesware.com/t/0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e/3c2b1a0f9e8d7c6b/spacer.gif",
    ),
    (
        "streak-open",
        "https://mailfoogae.appspot.com/t?sender=aYW5hQGV4YW1wbGUub3Jn&type=zerocontent&guid=7e1f0a2b",
    ),
    ("hunter-open", "https://mltrk.io/pixel/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"),
    ("bananatag-open", "https://t.bl-1.com/a1b2c3d4e5f6a7b8.png"),
    ("gmass-open", "https://ec2-52-26-194-35.us-west-2.compute.amazonaws.com/x/o?c=9f8e7d6c&r=ana"),
    ("gmass-open", "https://link.gmreg5.net/o?c=1a2b3c4d"),
]

CONTENT_CDN_URLS = [
    "https://mcusercontent.com/3f69e7dcb8ee79099c11e96be/images/be2c7623-7ad9-19b2-304c-3ed152e7f6ea.png",
    "https://image.s7.exct.net/lib/fe9e6087413e3b2/m/1/66f850f1-578b-5c72-dc4e-e60caea63367.jpg",
    "https://d3k81ch9hvuctc.cloudfront.net/company/qlSpys/images/3caf01df-c381-30bb-ac45-60f7e6f12146.png",
    "https://img.mailinblue.com/7434688/images/rnb/original/e7dc5b1b2485107c4214a137.png",
    "https://storage.mlcdn.com/account_image/123456/5f1e2d3c4b5a69788796a5b4c3d2e1f0.png",
]


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory) -> DetectionRules:
    return detection_rules(tmp_path_factory.mktemp("rules"))


@pytest.mark.parametrize(
    ("rule", "url"), VENDOR_URLS, ids=[f"{r}:{u[8:30]}" for r, u in VENDOR_URLS]
)
def test_vendor_open_pixel(rules: DetectionRules, rule: str, url: str) -> None:
    html = (
        '<img src="https://cdn.brand.example/logo.png" width="140" height="42">'
        f'<img src="{url.replace("&", "&amp;")}" alt="">'
    )
    candidate = only(run(rules, html))
    assert candidate.rule == rule
    assert candidate.url == url
    assert candidate.vendor


def test_every_issue_vendor_is_covered() -> None:
    wanted = {
        "mailchimp", "mandrill", "sendgrid", "mailgun", "ses", "sparkpost", "postmark", "hubspot",
        "sfmc", "pardot", "klaviyo", "iterable", "customerio", "braze", "brevo", "mailjet",
        "marketo", "adobe", "eloqua", "responsys", "bronto", "acoustic", "campaign-monitor",
        "constant-contact", "emarsys", "epsilon", "selligent", "whatcounts", "zoho", "aweber",
        "convertkit", "mailerlite", "substack", "shopify", "intercom", "litmus", "email-on-acid",
        "validity", "liveintent", "mailtrack", "yesware", "streak", "hunter", "bananatag", "gmass",
    }  # fmt: skip
    covered = {rule for rule, _ in VENDOR_URLS}
    missing = {v for v in wanted if not any(rule.startswith(v) for rule in covered)}
    assert missing == set()


@pytest.mark.parametrize("url", CONTENT_CDN_URLS)
def test_content_cdn_images_are_not_trackers(rules: DetectionRules, url: str) -> None:
    assert run(rules, f'<img src="{url}" alt="">').candidates == ()


def test_purposes_from_rules(rules: DetectionRules) -> None:
    validity = dict(VENDOR_URLS)["validity-open"]
    assert only(run(rules, f'<img src="{validity}">')).purpose is Purpose.DELIVERABILITY
    mailchimp = dict(VENDOR_URLS)["mailchimp-open"]
    assert only(run(rules, f'<img src="{mailchimp}">')).purpose is Purpose.CAMPAIGN_PERFORMANCE


def test_every_shipped_rule_has_an_example(tmp_path_factory: pytest.TempPathFactory) -> None:
    ruleset = load_rules(copy_detection_rules(tmp_path_factory.mktemp("rules")))
    for entry in (*ruleset.of("tracker"), *ruleset.of("click_tracker")):
        assert entry.data.get("examples"), f"{entry.where()}: {entry.id} has no example"

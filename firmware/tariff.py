"""Pricing a session with the operator's tariff, in integers, on the charger.

The tariff is an OCPI 2.2.1 Tariff object; prices and VAT are decimal strings so they stay
exact. This version prices ENERGY components without restrictions (a flat per-kWh rate);
anything else is refused clearly rather than priced wrongly.

    t = Tariff({"id": "flat", "currency": "EUR", "elements": [{"price_components":
               [{"type": "ENERGY", "price": "0.30", "vat": "20", "step_size": 1}]}]})
    t.price(energy_wh=12345) == {"currency": "EUR", "total_excl_vat_minor": 370, "total_incl_vat_minor": 444}

Rounding rule: amounts are exact rationals until the end; each total is rounded once to the
currency's minor unit, half away from zero.
"""
from firmware.fixed import parse, round_div

PRICE_PLACES = 6  # prices held in millionths of the currency unit
VAT_PLACES = 2    # VAT held in hundredths of a percent
_ZERO_DECIMAL = ("JPY", "KRW", "ISK", "CLP", "VND", "XAF", "XOF")


def flat(price_per_kwh, currency="EUR", vat="0", tariff_id="flat"):
    """The OCPI object of a single flat per-kWh tariff."""
    return {"id": tariff_id, "currency": currency, "elements": [{"price_components": [
        {"type": "ENERGY", "price": price_per_kwh, "vat": vat, "step_size": 1}]}]}


class Tariff:
    def __init__(self, obj):
        if not isinstance(obj, dict):
            raise ValueError("tariff must be an OCPI Tariff object")
        self.id = obj.get("id")
        self.currency = obj.get("currency")
        if not isinstance(self.id, str) or not self.id:
            raise ValueError("tariff.id must be a non-empty string")
        if not isinstance(self.currency, str) or len(self.currency) != 3:
            raise ValueError("tariff.currency must be an ISO 4217 code like \"EUR\"")
        self.minor_digits = 0 if self.currency in _ZERO_DECIMAL else 2
        elements = obj.get("elements")
        if not isinstance(elements, list) or len(elements) != 1:
            raise ValueError("tariff.elements: exactly one element is supported for now")
        el = elements[0]
        if not isinstance(el, dict) or el.get("restrictions"):
            raise ValueError("tariff.elements[0].restrictions are not supported yet")
        comps = el.get("price_components")
        if not isinstance(comps, list) or len(comps) != 1 or not isinstance(comps[0], dict):
            raise ValueError("tariff.elements[0].price_components must hold one ENERGY component")
        c = comps[0]
        if c.get("type") != "ENERGY":
            raise ValueError("tariff.elements[0].price_components[0].type: only ENERGY is supported for now")
        where = "tariff.elements[0].price_components[0]."
        self.price_per_kwh = parse(c.get("price"), PRICE_PLACES, where + "price")
        self.vat = parse(c.get("vat", "0"), VAT_PLACES, where + "vat")
        self.step_wh = c.get("step_size", 1)
        if not isinstance(self.step_wh, int) or self.step_wh < 1:
            raise ValueError(where + "step_size must be a positive integer (Wh)")
        if self.price_per_kwh < 0 or not 0 <= self.vat <= 100 * 10 ** VAT_PLACES:
            raise ValueError(where + "price must be >= 0 and vat within 0..100")

    def price(self, energy_wh):
        """Cost of a session in minor units (e.g. cents), excluding and including VAT."""
        billed = -(-energy_wh // self.step_wh) * self.step_wh
        excl = self.price_per_kwh * billed  # 10**-(PRICE_PLACES + 3) currency units
        places = PRICE_PLACES + 3
        vat_den = 100 * 10 ** VAT_PLACES
        incl = excl * (vat_den + self.vat)
        shift = 10 ** (places - self.minor_digits)
        return {
            "currency": self.currency,
            "total_excl_vat_minor": round_div(excl, shift),
            "total_incl_vat_minor": round_div(incl, shift * vat_den),
        }

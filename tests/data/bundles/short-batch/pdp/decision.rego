# A policy whose batch rule lies: one allow, whatever the number of requests.
package pdp

decision := {"outcome": "allow", "reasons": [{"code": "ok", "message": ""}], "obligations": []}

decisions := [decision]

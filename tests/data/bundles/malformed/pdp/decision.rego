# A policy that breaks the contract: an outcome the PDP does not know.
package pdp

decision := {"outcome": "maybe", "reasons": [], "obligations": []}

decisions := [decision | some _ in input.requests]

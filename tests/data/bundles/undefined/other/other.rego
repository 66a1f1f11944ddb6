# A bundle that loads fine but does not define data.pdp.decision.
package other

x := 1

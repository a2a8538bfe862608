package render

import (
	"fmt"
	"math/big"
	"net/netip"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// effectiveVars is what var.* would hold in a module for validations: the
// intent's values, defaults, and unknown for anything decided at plan time
// (wired inputs, sensitive inputs the agent supplies, missing ones).
func (v *validator) effectiveVars(m *Module) map[string]cty.Value {
	vals := make(map[string]cty.Value, len(m.Variables))
	for _, vr := range m.Variables {
		if val, ok := v.set[m.Name][vr.Name]; ok {
			vals[vr.Name] = val
			continue
		}
		switch {
		case vr.Sensitive, vr.Wiring != nil, vr.Default == nil:
			vals[vr.Name] = cty.UnknownVal(vr.Type)
		default:
			vals[vr.Name] = *vr.Default
		}
	}
	return vals
}

// staticValidations evaluates the templates' own validation blocks against
// the intent, so "az_count = 9" is refused when the config is saved rather
// than when a plan runs. A validation is evaluated when it reads an input the
// intent sets; one that cannot be evaluated here (an unknown value, a
// function not in validationFuncs) is left to Terraform.
func (v *validator) staticValidations() {
	for _, m := range v.c.modules {
		set := v.set[m.Name]
		if len(set) == 0 {
			continue
		}
		ctx := &hcl.EvalContext{
			Variables: map[string]cty.Value{"var": cty.ObjectVal(v.effectiveVars(m))},
			Functions: validationFuncs,
		}
		for _, vr := range m.Variables {
			path := JoinPath(JoinPath("modules", m.Name), vr.Name)
			for _, val := range vr.validations {
				if !readsAny(val.refs, set) || v.hasInputError(m.Name, vr.Name) {
					continue
				}
				if ok, msg := evalValidation(ctx, val); !ok {
					v.p.add(path, "%s", msg)
					break // one message per input is enough to act on
				}
			}
		}
	}
}

func readsAny(refs []string, set map[string]cty.Value) bool {
	for _, r := range refs {
		if _, ok := set[r]; ok {
			return true
		}
	}
	return false
}

// evalValidation returns false and the module's error message only when the
// condition evaluates, cleanly, to false.
func evalValidation(ctx *hcl.EvalContext, val validation) (bool, string) {
	res, diags := val.condition.Value(ctx)
	if diags.HasErrors() || !res.IsWhollyKnown() || res.IsNull() {
		return true, ""
	}
	b, err := convert.Convert(res, cty.Bool)
	if err != nil || b.True() {
		return true, ""
	}
	msg, diags := val.message.Value(ctx)
	if diags.HasErrors() || !msg.IsWhollyKnown() || msg.IsNull() || msg.Type() != cty.String {
		return false, fmt.Sprintf("fails the validation at %s", val.pos)
	}
	return false, msg.AsString()
}

// crossChecks are the checks no single validation block can express: subnet
// blocks inside the VPC and apart from each other, and enough zones for the
// modules that take the VPC's subnets.
func (v *validator) crossChecks() {
	vpc, ok := v.c.byName["vpc"]
	if !ok || !v.present["vpc"] || v.hasErrorUnder("modules.vpc") {
		return
	}
	vals := v.effectiveVars(vpc)
	v.checkSubnets(vals)

	az, ok := vals["az_count"]
	if !ok || !az.IsKnown() || az.IsNull() || az.Type() != cty.Number || !v.enabledBy["vpc"] {
		return
	}
	if f, _ := az.AsBigFloat().Float64(); f >= 2 {
		return
	}
	for _, consumer := range []string{"eks", "rds"} {
		m, ok := v.c.byName[consumer]
		if !ok || !v.enabledBy[consumer] {
			continue
		}
		vr := m.variable("subnet_ids")
		if vr == nil || vr.Wiring == nil || vr.Wiring.From != "vpc" {
			continue
		}
		if _, set := v.set[consumer]["subnet_ids"]; set {
			continue
		}
		v.p.add("modules.vpc.az_count", "module %s needs subnets in at least two availability zones; set az_count to 2 or more, or give modules.%s.subnet_ids", consumer, consumer)
		return
	}
}

// checkSubnets checks explicit subnet CIDR lists against the VPC CIDR and
// each other, including the blocks the module would carve by default for
// the list that is not given.
func (v *validator) checkSubnets(vals map[string]cty.Value) {
	_, setPub := v.set["vpc"]["public_subnet_cidrs"]
	_, setPriv := v.set["vpc"]["private_subnet_cidrs"]
	if !setPub && !setPriv {
		return
	}
	vpcCIDR, ok := knownString(vals["cidr"])
	if !ok {
		return
	}
	parent, err := parseCIDR(vpcCIDR)
	if err != nil {
		return
	}
	azs, ok := knownInt(vals["az_count"])
	if !ok || azs < 1 || azs > 16 {
		return
	}
	type block struct {
		path     string // modules.vpc.public_subnet_cidrs[1], or a description of a default block
		prefix   netip.Prefix
		explicit bool
	}
	var blocks []block
	collect := func(name string, offset int, explicit bool) {
		if explicit {
			list := vals[name]
			i := 0
			for it := list.ElementIterator(); it.Next(); i++ {
				_, e := it.Element()
				s, ok := knownString(e)
				if !ok {
					continue
				}
				p, err := parseCIDR(s)
				if err != nil || !p.Addr().Is4() {
					continue
				}
				path := fmt.Sprintf("modules.vpc.%s[%d]", name, i)
				if !parent.Contains(p.Addr()) || p.Bits() < parent.Bits() {
					v.p.add(path, "%s is outside the VPC CIDR %s; pick a block inside it", s, parent)
					continue
				}
				blocks = append(blocks, block{path, p, true})
			}
			return
		}
		if parent.Bits()+4 > 32 {
			return
		}
		for i := 0; i < azs; i++ {
			p, err := subnet(parent, 4, big.NewInt(int64(offset+i)))
			if err != nil {
				return
			}
			blocks = append(blocks, block{fmt.Sprintf("the default %s block for zone %d", name, i), p, false})
		}
	}
	collect("private_subnet_cidrs", 0, setPriv)
	collect("public_subnet_cidrs", 8, setPub)
	for i := range blocks {
		for j := 0; j < i; j++ {
			if blocks[i].prefix.Overlaps(blocks[j].prefix) {
				a, b := blocks[i], blocks[j]
				if !a.explicit {
					a, b = b, a
				}
				v.p.add(a.path, "%s overlaps %s (%s); subnets must not overlap", a.prefix, b.path, b.prefix)
			}
		}
	}
}

func knownString(v cty.Value) (string, bool) {
	if v == cty.NilVal || !v.IsKnown() || v.IsNull() || v.Type() != cty.String {
		return "", false
	}
	return v.AsString(), true
}

func knownInt(v cty.Value) (int, bool) {
	if v == cty.NilVal || !v.IsKnown() || v.IsNull() || v.Type() != cty.Number {
		return 0, false
	}
	f := v.AsBigFloat()
	if !f.IsInt() {
		return 0, false
	}
	i, _ := f.Int64()
	return int(i), true
}

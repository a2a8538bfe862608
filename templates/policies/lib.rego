# Helpers shared by the policies of Grape's default pack. Every rule reads
# input.resource_changes of `terraform show -json`. The helpers take small
# values (an actions list, one attribute), not whole resource changes: a
# plan of a thousand resources calls them a thousand times.
package grape.defaults.lib

# The actions create or update a resource (a replacement creates too).
creates_or_updates(actions) if {
	some action in actions
	action in {"create", "update"}
}

# The actions delete a resource, alone or as part of a replacement.
deletes(actions) if "delete" in actions

# The actions replace a resource: delete and create, in either order.
replaces(actions) if {
	"delete" in actions
	"create" in actions
}

# obj has the key, whatever its value (null included).
has_key(obj, key) if _ = obj[key]

# list(x) is x when it is an array, else the empty array: attributes the
# provider leaves null read as empty lists.
list(x) := x if is_array(x)

list(x) := [] if not is_array(x)
